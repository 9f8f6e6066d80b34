// Package bucketdep is the blob bucket as a dependency of a pipeline step
// (blobwriter's, refwriter's): the name the step runner knows it by, the
// probe the runner calls while it is down, and the attribution of the
// bucket's errors, in which gocloud.dev's error codes count.
package bucketdep

import (
	"context"
	"errors"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/blobref/blobref/pkg/step"
)

// Name names the bucket in outages, metrics and /readyz.
const Name = "bucket"

// Err attributes err (nil stays nil) to the bucket, for the runner to judge
// (step.Dependency): a network failure, a full disk, a 5xx or a timeout is
// an outage of the bucket, not of the upload. gocloud.dev's
// ResourceExhausted says the bucket is full. DeadlineExceeded says it may
// be down, and NotFound that the bucket itself may be missing (S3's
// NoSuchBucket, Azure's ContainerNotFound): the runner believes either only
// if the probe fails too, so an object that is merely absent stays the
// upload's own failure.
func Err(err error) error {
	switch gcerrors.Code(err) {
	case gcerrors.OK:
		return nil
	case gcerrors.ResourceExhausted:
		return step.Unavailable(Name, err)
	case gcerrors.DeadlineExceeded, gcerrors.NotFound:
		return step.Dependency(Name, suspect{err})
	}
	return step.Dependency(Name, err)
}

// suspect marks an error that may mean the bucket is down or gone: a
// timeout (Timeout() true) to the runner, which then probes the bucket
// before it takes the error for an outage.
type suspect struct{ error }

func (s suspect) Timeout() bool { return true }
func (s suspect) Unwrap() error { return s.error }

// Bucket is the part of *blob.Bucket a probe reads.
type Bucket interface {
	IsAccessible(ctx context.Context) (bool, error)
	Attributes(ctx context.Context, key string) (*blob.Attributes, error)
}

// ErrMissing is the probe's error for a bucket that does not exist.
var ErrMissing = errors.New("bucketdep: the bucket does not exist (or these credentials may not list it)")

// Probe returns the probe of bucket b: the bucket must exist (IsAccessible:
// a missing bucket or container is an outage, not an empty bucket), and
// reading the attributes of key, a key no upload has (upload ids never hold
// a dot, so that of ".probe" under the key prefix), must answer, content to
// find none.
func Probe(b Bucket, key string) step.Probe {
	return func(ctx context.Context) error {
		ok, err := b.IsAccessible(ctx)
		switch {
		case err != nil:
			return err
		case !ok:
			return ErrMissing
		}
		_, err = b.Attributes(ctx, key)
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil
		}
		return err
	}
}
