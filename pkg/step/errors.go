package step

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// PermanentError marks a failure that no retry can fix: the message is
// terminated and dead-lettered with Reason.
type PermanentError struct {
	Reason string // a dead-letter reason, e.g. events.ReasonConflict
	Err    error
}

func (e *PermanentError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that the message is dead-lettered with reason.
func Permanent(reason string, err error) error {
	return &PermanentError{Reason: reason, Err: err}
}

// Conflict reports that the same upload id arrived with another fingerprint.
func Conflict(format string, args ...any) error {
	return Permanent(events.ReasonConflict, fmt.Errorf(format, args...))
}

// Names of the dependencies every runner has. A step names its own (such
// as "bucket") in Step.Probes and in the errors it returns.
const (
	DependencyPostgres  = "postgres"
	DependencyJetStream = "jetstream"
)

// OutageError reports that a dependency is down or full: the work waits for
// it, and deliveries spent meanwhile do not count against the message.
type OutageError struct {
	Dependency string
	Err        error
}

func (e *OutageError) Error() string { return e.Dependency + " unavailable: " + e.Err.Error() }
func (e *OutageError) Unwrap() error { return e.Err }

// Unavailable reports that dependency dep is down or full, as err shows.
// Use it when the step knows; Dependency lets the runner decide.
func Unavailable(dep string, err error) error {
	return &OutageError{Dependency: dep, Err: err}
}

// DependencyError says which dependency err came from, without judging it:
// the runner's classification (see Dependency) decides whether it means the
// dependency is down.
type DependencyError struct {
	Dependency string
	Err        error
}

func (e *DependencyError) Error() string { return e.Err.Error() }
func (e *DependencyError) Unwrap() error { return e.Err }

// Dependency attributes err (nil stays nil) to dependency dep, such as
// "bucket": if err says the dependency is unreachable, overloaded, full or
// timing out, the runner treats the failure as an outage of dep, not of
// the message. Every other error stays an ordinary failure.
func Dependency(dep string, err error) error {
	if err == nil {
		return nil
	}
	return &DependencyError{Dependency: dep, Err: err}
}

// deadReason returns the dead-letter reason of err and true when err is
// permanent; every other error is transient and retried.
func deadReason(err error) (string, bool) {
	var perm *PermanentError
	if errors.As(err, &perm) {
		return perm.Reason, true
	}
	var inv *events.InvalidError
	if errors.As(err, &inv) {
		return inv.Reason, true
	}
	return "", false
}

// outage is what classify makes of a failure that is a dependency's.
type outage struct {
	dependency string
	// certain: the error itself says the dependency is down or full
	// (refused, closed, shut down, no space). A timeout is not certain: a
	// dependency that answers its probe was slow for this message only.
	certain bool
}

// classify decides, in one place, whether err is an outage of a
// dependency rather than a failure of the step itself: an explicit
// OutageError; a Postgres or NATS error that says the server is gone, shut
// down, out of resources or late; or an error attributed with Dependency
// that says the same in the language of the network, the file system or an
// HTTP service. A permanent error is never an outage.
func classify(err error) (outage, bool) {
	if err == nil || errors.Is(err, context.Canceled) {
		return outage{}, false
	}
	if _, dead := deadReason(err); dead {
		return outage{}, false
	}
	var oe *OutageError
	if errors.As(err, &oe) {
		return outage{dependency: oe.Dependency, certain: true}, true
	}
	if certain, ok := postgresOutage(err); ok {
		return outage{dependency: DependencyPostgres, certain: certain}, true
	}
	if certain, ok := natsOutage(err); ok {
		return outage{dependency: DependencyJetStream, certain: certain}, true
	}
	var de *DependencyError
	if errors.As(err, &de) {
		if certain, ok := genericOutage(err); ok {
			return outage{dependency: de.Dependency, certain: certain}, true
		}
	}
	return outage{}, false
}

// postgresOutage recognises the errors of a Postgres that is unreachable,
// shutting down or out of resources (disk full included); ok is false for
// every other error, such as a constraint violation.
func postgresOutage(err error) (certain, ok bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch code := pgErr.Code; {
		case len(code) == 5 && (code[:2] == "08" || code[:2] == "53" || code[:2] == "58"):
			// connection exception, insufficient resources (disk full,
			// out of memory, too many connections), system error (I/O)
			return true, true
		case code == "57P01", code == "57P02", code == "57P03", code == "57P05":
			// admin shutdown, crash shutdown, cannot connect now, idle
			// session timeout
			return true, true
		}
		return false, false
	}
	var connectErr *pgconn.ConnectError
	switch {
	case errors.As(err, &connectErr), errors.Is(err, pgconn.ErrConnClosed):
		return true, true
	case pgconn.Timeout(err):
		return false, true
	}
	return false, false
}

// natsOutage recognises a NATS connection that is down and a JetStream
// that does not answer or refuses for lack of resources.
func natsOutage(err error) (certain, ok bool) {
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrNoServers),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrServerShutdown),
		errors.Is(err, jetstream.ErrConnectionClosed), errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return true, true
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoHeartbeat),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, jetstream.ErrConsumerLeadershipChanged):
		return false, true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.ErrorCode == jsStoreFailed && strings.Contains(apiErr.Description, "message size exceeds"):
			// The event itself is too large for the stream: no wait helps.
			return false, false
		case apiErr.Code == http.StatusServiceUnavailable, apiErr.Code == http.StatusTooManyRequests,
			apiErr.ErrorCode == jsStoreFailed,                    // a stream full: maximum bytes or messages exceeded
			apiErr.ErrorCode == jsInsufficientResources,          // the server's store full
			apiErr.ErrorCode == 10047, apiErr.ErrorCode == 10028: // storage, memory exhausted
			return true, true
		}
	}
	return false, false
}

// JetStream's error codes (err_code) of a publish it cannot store.
const (
	// jsStoreFailed: the stream refused the message, such as "maximum bytes
	// exceeded" when a stream that discards new messages is full (UPLOADS
	// is), or "message size exceeds maximum allowed".
	jsStoreFailed = 10077
	// jsInsufficientResources: the server has no room left for JetStream.
	jsInsufficientResources = 10023
)

// genericOutage recognises, in an error a step attributed to a dependency,
// a network failure, a full or failing file system, a timeout (an error
// whose Timeout method says so) or an HTTP service's 5xx or 429. A step
// whose client reports an outage otherwise says so with Unavailable.
func genericOutage(err error) (certain, ok bool) {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EIO),
		errors.Is(err, syscall.EROFS),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, io.ErrUnexpectedEOF):
		return true, true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return false, true
	}
	// Not net.Error: every syscall.Errno has its methods, EXDEV too.
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var timeout interface{ Timeout() bool }
	switch {
	case errors.As(err, &opErr):
		return !opErr.Timeout(), true
	case errors.As(err, &dnsErr):
		return !dnsErr.Timeout(), true
	case errors.As(err, &timeout) && timeout.Timeout():
		return false, true
	}
	var status interface{ HTTPStatusCode() int } // an HTTP service's answer, such as S3's
	if errors.As(err, &status) {
		if c := status.HTTPStatusCode(); c >= 500 || c == http.StatusTooManyRequests {
			return true, true
		}
	}
	return false, false
}
