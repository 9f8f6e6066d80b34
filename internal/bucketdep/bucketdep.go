// Package bucketdep is the blob bucket as a dependency of a pipeline step
// (blobwriter's, refwriter's): the name the step runner knows it by, the
// probe the runner calls while it is down, and the attribution of the
// bucket's errors, in which gocloud.dev's error codes count.
package bucketdep

import (
	"context"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/blobref/blobref/pkg/step"
)

// Name names the bucket in outages, metrics and /readyz.
const Name = "bucket"

// Err attributes err (nil stays nil) to the bucket, for the runner to judge
// (step.Dependency): a network failure, a full disk, a 5xx or a timeout is
// an outage of the bucket, not of the upload. gocloud.dev's
// ResourceExhausted says the bucket is full, and DeadlineExceeded that it
// may be down (the runner probes it before it believes so).
func Err(err error) error {
	switch gcerrors.Code(err) {
	case gcerrors.OK:
		return nil
	case gcerrors.ResourceExhausted:
		return step.Unavailable(Name, err)
	case gcerrors.DeadlineExceeded:
		return step.Dependency(Name, timeout{err})
	}
	return step.Dependency(Name, err)
}

// timeout marks an error as a timeout (Timeout() true), which the runner
// takes for a possible outage.
type timeout struct{ error }

func (t timeout) Timeout() bool { return true }
func (t timeout) Unwrap() error { return t.error }

// Attributer is the part of *blob.Bucket a probe reads.
type Attributer interface {
	Attributes(ctx context.Context, key string) (*blob.Attributes, error)
}

// Probe returns the probe of bucket b: it reads the attributes of key, a key
// no upload has (upload ids never hold a dot, so that of ".probe" under the
// key prefix), and is content to find none.
func Probe(b Attributer, key string) step.Probe {
	return func(ctx context.Context) error {
		_, err := b.Attributes(ctx, key)
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil
		}
		return err
	}
}
