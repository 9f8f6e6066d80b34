package step

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// Dependency says which dependency an error came from; the runner decides
// from the error itself whether it is down (certainly, or if its probe
// fails too), or whether the step failed on its own.
func TestErrorsThatMeanADependencyIsDown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		dep  string // "" for the step's own failure
	}{
		{"own failure", errors.New("nope"), ""},
		{"attributed own failure", Dependency("bucket", errors.New("nope")), ""},
		{"permanent", Dependency("bucket", Permanent(events.ReasonConflict, syscall.ENOSPC)), ""},
		{"shutdown", Dependency("bucket", context.Canceled), ""},
		{"explicit", Unavailable("index", errors.New("read-only")), "index"},
		{"postgres refused", &pgconn.ConnectError{}, "postgres"},
		{"postgres admin shutdown", fmt.Errorf("claim: %w", &pgconn.PgError{Code: "57P01"}), "postgres"},
		{"postgres disk full", &pgconn.PgError{Code: "53100"}, "postgres"},
		{"postgres too many connections", &pgconn.PgError{Code: "53300"}, "postgres"},
		{"postgres unique violation", &pgconn.PgError{Code: "23505"}, ""},
		{"nats no responders", fmt.Errorf("publish: %w", nats.ErrNoResponders), "jetstream"},
		{"jetstream unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008}, "jetstream"},
		{"jetstream storage exhausted", &jetstream.APIError{Code: 500, ErrorCode: 10047}, "jetstream"},
		{"jetstream stream full", fmt.Errorf("publish: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}), "jetstream"},
		{"jetstream stream full of messages", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, "jetstream"},
		{"jetstream insufficient resources", &jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}, "jetstream"},
		{"jetstream message too large", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "message size exceeds maximum allowed"}, ""},
		{"jetstream stream not found", &jetstream.APIError{Code: 404, ErrorCode: 10059}, ""},
		{"bucket full", Dependency("bucket", &fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}), "bucket"},
		{"bucket over quota", Dependency("bucket", &os.SyscallError{Syscall: "write", Err: syscall.EDQUOT}), "bucket"},
		{"bucket refused", Dependency("bucket", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), "bucket"},
		{"bucket cannot rename across devices", Dependency("bucket", &os.LinkError{Op: "rename", Err: syscall.EXDEV}), ""},
		{"bucket timeout", Dependency("bucket", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}), "bucket"},
		{"bucket 503", Dependency("bucket", httpStatusError(503)), "bucket"},
		{"bucket 404", Dependency("bucket", httpStatusError(404)), ""},
	} {
		got := outageOf(tc.err)
		if got != tc.dep {
			t.Errorf("%s (%v): got outage of %q, want %q", tc.name, tc.err, got, tc.dep)
		}
	}
}

// httpStatusError is an HTTP service's answer, as S3's SDK reports one.
type httpStatusError int

func (e httpStatusError) Error() string       { return fmt.Sprintf("http status %d", int(e)) }
func (e httpStatusError) HTTPStatusCode() int { return int(e) }

// outageOf names the dependency whose outage err is, as the runner
// classifies it, or "" when err is the step's own failure. An uncertain
// outage (a timeout) counts: the runner probes before it believes it.
func outageOf(err error) string {
	o, ok := classify(err)
	if !ok {
		return ""
	}
	return o.dependency
}
