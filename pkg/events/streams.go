package events

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream defaults.
const (
	// DefaultMaxAge is how long UPLOADS keeps events.
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultDLQMaxAge is how long UPLOADS_DLQ keeps dead letters.
	DefaultDLQMaxAge = 30 * 24 * time.Hour
	// DefaultDuplicates is the JetStream de-duplication window of both streams.
	DefaultDuplicates = 2 * time.Minute
	// DefaultMaxBytes is the most UPLOADS stores, so that a flood of uploads cannot fill the
	// whole JetStream store, which the staging bucket and the dead letters share. JetStream
	// reserves a stream's MaxBytes in the server's store (max_file_store) when it creates
	// the stream: the defaults leave most of a small server's store to the staging bucket.
	DefaultMaxBytes = 1 << 30
	// DefaultDLQMaxBytes is the most UPLOADS_DLQ stores.
	DefaultDLQMaxBytes = 256 << 20
	// HeaderRoom is what UPLOADS allows an event's headers beside its data: its largest
	// message is the inline limit plus HeaderRoom. The longest attributes the contract
	// allows, percent-encoded, take less.
	HeaderRoom = 64 << 10
)

// StreamOptions configures the streams. The zero value is the default.
type StreamOptions struct {
	// Replicas is the number of stream replicas; 0 means 1. Use 3 on a cluster.
	Replicas int
	// Storage is the storage type; the zero value is jetstream.FileStorage.
	Storage jetstream.StorageType
	// MaxAge is how long UPLOADS keeps events; 0 means DefaultMaxAge.
	MaxAge time.Duration
	// DLQMaxAge is how long UPLOADS_DLQ keeps dead letters; 0 means DefaultDLQMaxAge.
	DLQMaxAge time.Duration
	// Duplicates is the de-duplication window; 0 means DefaultDuplicates.
	Duplicates time.Duration
	// MaxBytes bounds what UPLOADS stores; 0 means DefaultMaxBytes, negative no bound.
	MaxBytes int64
	// DLQMaxBytes bounds what UPLOADS_DLQ stores; 0 means DefaultDLQMaxBytes, negative no
	// bound.
	DLQMaxBytes int64
	// MaxInlineSize is the inline limit the consumers decode with; UPLOADS refuses a message
	// larger than it plus HeaderRoom. 0 means DefaultMaxInlineSize.
	MaxInlineSize int
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.DLQMaxAge <= 0 {
		o.DLQMaxAge = DefaultDLQMaxAge
	}
	if o.Duplicates <= 0 {
		o.Duplicates = DefaultDuplicates
	}
	o.MaxBytes = byteLimit(o.MaxBytes, DefaultMaxBytes)
	o.DLQMaxBytes = byteLimit(o.DLQMaxBytes, DefaultDLQMaxBytes)
	if o.MaxInlineSize <= 0 {
		o.MaxInlineSize = DefaultMaxInlineSize
	}
	return o
}

// byteLimit is a stream's MaxBytes: n, def for 0, and JetStream's "unlimited" (-1) for
// negative n.
func byteLimit(n, def int64) int64 {
	switch {
	case n == 0:
		return def
	case n < 0:
		return -1
	}
	return n
}

// maxMsgSize is UPLOADS' largest message: the inline limit and room for the headers.
func (o StreamOptions) maxMsgSize() int32 {
	if n := int64(o.MaxInlineSize) + HeaderRoom; n <= math.MaxInt32 {
		return int32(n) // #nosec G115 -- n <= math.MaxInt32 checked above, and MaxInlineSize is positive after withDefaults
	}
	return -1
}

// StreamConfig returns the configuration of the UPLOADS stream: subjects "uploads.>", limits
// retention (every consumer and subscriber sees every event; old events age out after
// MaxAge) and the de-duplication window that Nats-Msg-Id works in. It stores at most MaxBytes
// and refuses new messages once full (discard new): an event is never dropped to make room,
// so a full stream delays uploads (publishes fail until events age out) and loses none. A
// message may be as large as the inline limit plus HeaderRoom.
func StreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "blobref upload pipeline events (CloudEvents)",
		Subjects:    []string{StreamSubjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    o.MaxBytes,
		MaxMsgSize:  o.maxMsgSize(),
		MaxAge:      o.MaxAge,
		Storage:     o.Storage,
		Replicas:    o.Replicas,
		Duplicates:  o.Duplicates,
	}
}

// DLQStreamConfig returns the configuration of the UPLOADS_DLQ stream: subjects
// "dlq.uploads.>", limits retention with DLQMaxAge, at most DLQMaxBytes. Once full it refuses
// new dead letters: the step that gives up on a message then cannot dead-letter it and
// keeps it in UPLOADS, retried, until there is room.
func DLQStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        DLQStreamName,
		Description: "blobref dead letters: the original message plus Blobref-Dead-* headers",
		Subjects:    []string{DLQSubjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    o.DLQMaxBytes,
		MaxAge:      o.DLQMaxAge,
		Storage:     o.Storage,
		Replicas:    o.Replicas,
		Duplicates:  o.Duplicates,
	}
}

// EnsureStreams creates both streams, or updates them to the configuration o describes. It is
// idempotent and safe to call concurrently from many replicas at start-up.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	for _, cfg := range []jetstream.StreamConfig{StreamConfig(o), DLQStreamConfig(o)} {
		if err := ensureStream(ctx, js, cfg); err != nil {
			return fmt.Errorf("events: ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	const attempts = 3
	var err error
	for range attempts {
		// CreateOrUpdateStream updates, and creates when the stream is not found. Two replicas
		// racing to create it can see "name already in use"; the next attempt updates.
		if _, err = js.CreateOrUpdateStream(ctx, cfg); !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return err
		}
	}
	return err
}
