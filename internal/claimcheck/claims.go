package claimcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

const (
	// readWindow is how many bytes of chunks a reader asks for ahead of
	// what it has handed out: the bound of what one read holds in memory,
	// whatever the object's size.
	readWindow = 1 << 20
	// maxWindowChunks caps the window in chunks for objects of small chunks.
	maxWindowChunks = 64
	// defaultIdleCheck is how long a reader waits for a chunk before it
	// looks whether the object is still there.
	defaultIdleCheck = 10 * time.Second
	// maxIdleChecks is how many idle checks a reader makes before it gives
	// up on a chunk that does not come.
	maxIdleChecks = 3
	// consumerIdle is the inactive threshold of a reader's consumer: the
	// server removes it if a reader vanishes without Close.
	consumerIdle = 2 * time.Minute
	// closeTimeout bounds deleting the consumer on Close.
	closeTimeout = 5 * time.Second
)

// ObjectClaims opens, and deletes, claim checks stored in JetStream Object
// Store buckets, referenced as nats-object://<bucket>/<object name>.
type ObjectClaims struct {
	JS jetstream.JetStream

	idleCheck  time.Duration // defaultIdleCheck when zero; set by tests
	apiTimeout time.Duration // defaultAPITimeout when zero; set by tests
}

// Open returns a reader of the referenced object. It reads the object's
// chunks through an ordered pull consumer that asks for a small window of
// chunks at a time, so memory stays bounded however large the object is.
// The reader verifies the object's size and SHA-256 against its info before
// it returns io.EOF: missing, surplus or altered bytes are an error, never a
// short read. An object that does not exist, was deleted, or lost its
// chunks, as the bucket's leader sees it (getInfo), is a PermanentError
// with reason events.ReasonClaimMissing; a link
// to another object is one with reason events.ReasonInvalid.
//
// The reader stops when ctx is done; Close releases its consumer.
func (c ObjectClaims) Open(ctx context.Context, dataref string) (io.ReadCloser, error) {
	bucket, name, err := events.ParseObjectRef(dataref)
	if err != nil {
		return nil, step.Permanent(events.ReasonInvalid, err)
	}
	store, info, err := c.lookup(ctx, bucket, name)
	if err != nil {
		return nil, claimError(dataref, err)
	}
	r, err := c.read(ctx, dataref, store, info)
	if err != nil {
		return nil, claimError(dataref, err)
	}
	return r, nil
}

var (
	errObjectGone  = errors.New("object was deleted")
	errChunksGone  = errors.New("object's chunks are missing")
	errInvalidLink = errors.New("object store links are refused")
)

// claimError classifies an error reading dataref.
func claimError(dataref string, err error) error {
	err = fmt.Errorf("dataref %s: %w", dataref, err)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrObjectNotFound),
		errors.Is(err, errObjectGone), errors.Is(err, errChunksGone):
		return step.Permanent(events.ReasonClaimMissing, err)
	case errors.Is(err, errInvalidLink):
		return step.Permanent(events.ReasonInvalid, err)
	}
	return err
}

// defaultAPITimeout bounds each JetStream API exchange of a claim read (its
// info, its consumer, its idle checks): a lost reply is retried, not awaited
// until the step's deadline.
const defaultAPITimeout = 10 * time.Second

// apiContext is ctx with the deadline of one JetStream API exchange.
func (c ObjectClaims) apiContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := c.apiTimeout
	if d <= 0 {
		d = defaultAPITimeout
	}
	return context.WithTimeout(ctx, d)
}

// objectInfoer is the part of jetstream.ObjectStore a reader uses.
type objectInfoer interface {
	GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error)
}

// lookup returns the info of the named object. A link to another object is
// refused: a claim check names the staged bytes of its own upload, and a
// link would let an object of one name hand over another upload's bytes.
func (c ObjectClaims) lookup(ctx context.Context, bucket, name string) (objectInfoer, *jetstream.ObjectInfo, error) {
	ctx, cancel := c.apiContext(ctx)
	defer cancel()
	store, err := c.JS.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, nil, err
	}
	info, err := c.getInfo(ctx, store, bucket, name)
	if err != nil {
		return nil, nil, err
	}
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, nil, fmt.Errorf("%w: object %s/%s is a link", errInvalidLink, bucket, name)
	}
	if info.NUID == "" {
		return nil, nil, fmt.Errorf("object %s/%s: %w", bucket, name, jetstream.ErrBadObjectMeta)
	}
	info.Bucket, info.Name = bucket, name // as read: the stream and meta subject to use
	return store, info, nil
}
