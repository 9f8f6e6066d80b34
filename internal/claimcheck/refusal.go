package claimcheck

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// refusalKind is what a publish's error says about retrying it.
type refusalKind int

const (
	refusedNot      refusalKind = iota // stored
	refusedForNow                      // too many requests, unavailable, a timeout: retry
	refusedFull                        // the bucket or the JetStream store is full
	refusedSequence                    // the expected last sequence did not match
	refusedForGood                     // a bad request: a retry fails alike
)

// JetStream's error codes for a full store.
const (
	errCodeAccountResources   = 10002 // resource limits exceeded for account
	errCodeInsufficient       = 10023 // insufficient resources
	errCodeStorageResources   = 10047 // insufficient storage resources available
	errCodeStoreFailed        = 10077 // the store's own error: "maximum bytes exceeded", ...
	errCodeStreamTooManyReqs  = 10167 // too many requests (the stream's inbound queue is full)
	errCodeStatusTooManyReqs  = 429
	errCodeStatusUnavailable  = 503
	errCodeStatusRequestLimit = 408
)

func refusal(err error) refusalKind {
	if err == nil {
		return refusedNot
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return refusedForNow // a timeout, no responders, a reconnect
	}
	switch apiErr.ErrorCode {
	case errCodeAccountResources, errCodeInsufficient, errCodeStorageResources:
		return refusedFull
	case errCodeStoreFailed:
		if d := apiErr.Description; strings.Contains(d, "maximum bytes") || strings.Contains(d, "maximum messages") {
			return refusedFull
		}
		return refusedForNow
	case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
		return refusedSequence
	case errCodeStreamTooManyReqs:
		return refusedForNow
	}
	switch apiErr.Code {
	case errCodeStatusTooManyReqs, errCodeStatusUnavailable, errCodeStatusRequestLimit:
		return refusedForNow
	}
	if apiErr.Code >= 500 {
		return refusedForNow
	}
	return refusedForGood
}

// sleepCtx waits d, or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
