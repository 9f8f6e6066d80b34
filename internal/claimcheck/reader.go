package claimcheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// read starts reading the chunks of the object described by info.
func (c ObjectClaims) read(ctx context.Context, dataref string, store objectInfoer, info *jetstream.ObjectInfo) (*objectReader, error) {
	want, ok := ObjectDigest(info.Digest)
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
		stream:  streamName(info.Bucket),
		subject: chunkSubject(info.Bucket, info.NUID),
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
	now, err := r.claims.getInfo(ctx, r.store, r.info.Bucket, r.info.Name)
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
