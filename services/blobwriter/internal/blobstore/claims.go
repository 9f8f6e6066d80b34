package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// The layout of an Object Store bucket (NATS ADR-20): bucket B is stream
// OBJ_B; the chunks of the object instance with NUID N are the messages on
// $O.B.C.N, in order; its info (size, chunk count, digest) is the last
// message on its meta subject, read by ObjectStore.GetInfo.
const (
	objStreamTmpl = "OBJ_%s"
	objChunksTmpl = "$O.%s.C.%s"
	objMetaTmpl   = "$O.%s.M.%s" // then the base64url (padded) object name
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

// ObjectClaims opens claim checks stored in JetStream Object Store buckets,
// referenced as nats-object://<bucket>/<object name>.
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
// chunks is a PermanentError with reason events.ReasonClaimMissing; a link
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

// Delete removes the referenced object: it marks the object deleted (its
// info, rolled up), then rolls its chunks up into one empty message, which
// gives their space back. Both are publishes to the bucket's subjects, as
// ObjectStore.Delete's mark is; unlike it, no purge, which the services
// may not send. An object already gone is no error.
func (c ObjectClaims) Delete(ctx context.Context, dataref string) error {
	bucket, name, err := events.ParseObjectRef(dataref)
	if err != nil {
		return err
	}
	ctx, cancel := c.apiContext(ctx)
	defer cancel()
	store, err := c.JS.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete claim check %s: %w", dataref, err)
	}
	info, err := store.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete claim check %s: %w", dataref, err)
	}
	gone := *info
	gone.Deleted, gone.Size, gone.Chunks, gone.Digest, gone.ModTime = true, 0, 0, "", time.Now().UTC()
	data, err := json.Marshal(gone)
	if err != nil {
		return fmt.Errorf("delete claim check %s: %w", dataref, err)
	}
	meta := nats.NewMsg(fmt.Sprintf(objMetaTmpl, bucket, base64.URLEncoding.EncodeToString([]byte(name))))
	meta.Data = data
	chunks := nats.NewMsg(fmt.Sprintf(objChunksTmpl, bucket, info.NUID))
	for _, m := range []*nats.Msg{meta, chunks} {
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		if _, err := c.JS.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("delete claim check %s: %w", dataref, err)
		}
	}
	return nil
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
	info, err := store.GetInfo(ctx, name)
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

// read starts reading the chunks of the object described by info.
func (c ObjectClaims) read(ctx context.Context, dataref string, store objectInfoer, info *jetstream.ObjectInfo) (*objectReader, error) {
	want, ok := events.ObjectDigest(info.Digest)
	if !ok || info.Chunks == 0 && info.Size != 0 {
		return nil, fmt.Errorf("object %s/%s: %w (size %d, %d chunks, digest %q)",
			info.Bucket, info.Name, jetstream.ErrBadObjectMeta, info.Size, info.Chunks, info.Digest)
	}
	r := &objectReader{
		claims:  c,
		ctx:     ctx,
		dataref: dataref,
		store:   store,
		info:    info,
		stream:  fmt.Sprintf(objStreamTmpl, info.Bucket),
		subject: fmt.Sprintf(objChunksTmpl, info.Bucket, info.NUID),
		want:    want,
		h:       sha256.New(),
		idle:    c.idleCheck,
	}
	if r.idle <= 0 {
		r.idle = defaultIdleCheck
	}
	if info.Chunks == 0 {
		return r, nil // empty: nothing to consume
	}

	actx, cancel := c.apiContext(ctx)
	cons, err := c.JS.OrderedConsumer(actx, r.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{r.subject},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: consumerIdle,
		MaxResetAttempts:  5,
	})
	cancel()
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("bucket %s: %w", info.Bucket, jetstream.ErrBucketNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("chunks of %s/%s: %w", info.Bucket, info.Name, err)
	}
	r.cons = cons
	// The consumer starts at the first chunk: whatever it does not count
	// as pending is not stored.
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending < uint64(info.Chunks) {
		err := r.missing(ctx, ci.NumPending)
		_ = r.Close()
		return nil, err
	}
	r.msgs, err = cons.Messages(jetstream.PullMaxMessages(windowChunks(info)))
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("chunks of %s/%s: %w", info.Bucket, info.Name, err)
	}
	// Stopping the iterator is what interrupts the consumer's own retries
	// (a reset after a reconnect), which do not watch ctx.
	r.stopOnDone = context.AfterFunc(ctx, r.msgs.Stop)
	return r, nil
}

// windowChunks is how many chunks of the object fit the read window: at
// least two, so one is in flight while the other is read.
func windowChunks(info *jetstream.ObjectInfo) int {
	return int(min(max(readWindow/max(chunkSize(info), 1), 2), maxWindowChunks))
}

// chunkSize is the most one chunk of the object holds, as its writer
// recorded it (nats.go always does), or else the chunks' average size.
func chunkSize(info *jetstream.ObjectInfo) uint64 {
	if info.Opts != nil && info.Opts.ChunkSize > 0 {
		return uint64(info.Opts.ChunkSize)
	}
	return (info.Size + uint64(info.Chunks) - 1) / uint64(info.Chunks)
}

// objectReader streams the chunks of one object instance to its reader.
type objectReader struct {
	claims  ObjectClaims // JS, and the deadlines of its API exchanges
	ctx     context.Context
	dataref string
	store   objectInfoer
	info    *jetstream.ObjectInfo
	stream  string
	subject string
	want    []byte // the object's SHA-256, from its info
	idle    time.Duration

	cons       jetstream.Consumer // nil for an empty object
	msgs       jetstream.MessagesContext
	stopOnDone func() bool

	h      hash.Hash
	chunk  []byte // what is left of the current chunk
	chunks uint32 // chunks received
	size   uint64 // bytes received
	err    error  // returned once chunk is empty; io.EOF after the last chunk verified

	closeOnce sync.Once
	closeErr  error
}

// Read implements io.Reader.
func (r *objectReader) Read(p []byte) (int, error) {
	for len(r.chunk) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.err = r.next(); r.err != nil && r.err != io.EOF {
			r.err = claimError(r.dataref, r.err)
		}
	}
	n := copy(p, r.chunk)
	r.chunk = r.chunk[n:]
	return n, nil
}

// next receives the next chunk into r.chunk. It returns io.EOF with the last
// chunk, once the object's size and digest are verified.
func (r *objectReader) next() error {
	if r.chunks == r.info.Chunks { // an empty object
		if err := r.verify(); err != nil {
			return err
		}
		return io.EOF
	}
	msg, err := r.receive()
	if err != nil {
		return err
	}
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("chunk %d of %s/%s: %w", r.chunks+1, r.info.Bucket, r.info.Name, err)
	}
	data := msg.Data()
	r.chunks++
	r.size += uint64(len(data))
	r.h.Write(data)
	if r.size > r.info.Size {
		return fmt.Errorf("object %s/%s: more than its %d bytes", r.info.Bucket, r.info.Name, r.info.Size)
	}
	if r.chunks == r.info.Chunks {
		if err := r.verify(); err != nil {
			return err
		}
		r.chunk = data
		return io.EOF
	}
	if meta.NumPending == 0 {
		return r.missing(r.ctx, 0)
	}
	r.chunk = data
	return nil
}

// verify checks what was read against the object's info.
func (r *objectReader) verify() error {
	if r.size != r.info.Size {
		return fmt.Errorf("object %s/%s: read %d bytes, its info says %d", r.info.Bucket, r.info.Name, r.size, r.info.Size)
	}
	if sum := r.h.Sum(nil); !bytes.Equal(sum, r.want) {
		return fmt.Errorf("object %s/%s: read bytes with sha256 %x, its info says %x: %w",
			r.info.Bucket, r.info.Name, sum, r.want, jetstream.ErrDigestMismatch)
	}
	return nil
}

// receive waits for the next chunk. While none comes it checks, every
// r.idle, that the object is still there to be read; after maxIdleChecks
// checks that found it there and still no chunk (a consumer lost with a
// cluster node, say), it gives up with a transient error: the step's retry
// reads through a new consumer instead of holding its batch until the
// step's deadline.
func (r *objectReader) receive() (jetstream.Msg, error) {
	for checks := 0; ; checks++ {
		if checks == maxIdleChecks {
			return nil, fmt.Errorf("chunk %d of %s/%s: none came for %v, the object is there",
				r.chunks+1, r.info.Bucket, r.info.Name, time.Duration(checks)*r.idle)
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.idle)
		msg, err := r.msgs.Next(jetstream.NextContext(ctx))
		cancel()
		switch {
		case err == nil:
			return msg, nil
		case r.ctx.Err() != nil:
			return nil, fmt.Errorf("object %s/%s: %w", r.info.Bucket, r.info.Name, context.Cause(r.ctx))
		case !errors.Is(err, context.DeadlineExceeded):
			return nil, fmt.Errorf("chunk %d of %s/%s: %w", r.chunks+1, r.info.Bucket, r.info.Name, err)
		}
		if err := r.check(r.ctx); err != nil {
			return nil, err
		}
	}
}

// missing explains why the object's stream holds only stored of its
// chunks after those read.
func (r *objectReader) missing(ctx context.Context, stored uint64) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	return fmt.Errorf("object %s/%s: %d chunks read and %d more stored, its info says %d",
		r.info.Bucket, r.info.Name, r.chunks, stored, r.info.Chunks)
}

// check returns an error if the object being read is no longer there to
// read: deleted (errObjectGone), replaced by another instance (a transient
// error: a retry reads the new one), or short of chunks (errChunksGone).
func (r *objectReader) check(ctx context.Context) error {
	ctx, cancel := r.claims.apiContext(ctx)
	defer cancel()
	now, err := r.store.GetInfo(ctx, r.info.Name)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound), errors.Is(err, jetstream.ErrBucketNotFound):
		return fmt.Errorf("%w while read: %s/%s", errObjectGone, r.info.Bucket, r.info.Name)
	case err != nil:
		return fmt.Errorf("object %s/%s: %w", r.info.Bucket, r.info.Name, err)
	case now.NUID != r.info.NUID:
		return fmt.Errorf("object %s/%s was replaced while read", r.info.Bucket, r.info.Name)
	}
	stream, err := r.claims.JS.Stream(ctx, r.stream)
	if err != nil {
		return fmt.Errorf("object %s/%s: %w", r.info.Bucket, r.info.Name, err)
	}
	si, err := stream.Info(ctx, jetstream.WithSubjectFilter(r.subject))
	if err != nil {
		return fmt.Errorf("object %s/%s: %w", r.info.Bucket, r.info.Name, err)
	}
	if n := si.State.Subjects[r.subject]; n < uint64(r.info.Chunks) {
		return fmt.Errorf("%w: %s/%s has %d of its %d chunks", errChunksGone, r.info.Bucket, r.info.Name, n, r.info.Chunks)
	}
	return nil
}

// Close stops reading and deletes the reader's consumer.
func (r *objectReader) Close() error {
	r.closeOnce.Do(func() {
		if r.stopOnDone != nil {
			r.stopOnDone()
		}
		if r.msgs != nil {
			r.msgs.Stop()
		}
		if r.cons == nil {
			return
		}
		ci := r.cons.CachedInfo()
		if ci == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), closeTimeout)
		defer cancel()
		err := r.claims.JS.DeleteConsumer(ctx, r.stream, ci.Name)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			r.closeErr = fmt.Errorf("object %s/%s: delete consumer %s: %w", r.info.Bucket, r.info.Name, ci.Name, err)
		}
	})
	return r.closeErr
}
