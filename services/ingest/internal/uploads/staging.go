package uploads

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/pkg/events"
)

// stageChunkSize is the size of the object store chunks staged bodies are
// cut into (the object store's default).
const stageChunkSize = 128 << 10

// Staging is the JetStream Object Store bucket large bodies are
// claim-checked in. Its TTL makes staged objects expire on their own.
type Staging struct {
	JS       jetstream.JetStream
	Bucket   string
	TTL      time.Duration
	Replicas int
	// LookUp makes Ensure (and every later open) only look the bucket up:
	// blobrefctl setup creates it (NATS_SETUP=off).
	LookUp bool

	mu    sync.Mutex
	store jetstream.ObjectStore // nil until opened, or after a failure
}

// DataRef is the claim-check reference of the object named name.
func (s *Staging) DataRef(name string) string {
	return events.ObjectRef(s.Bucket, name)
}

// Ensure creates the bucket, or updates its TTL and replicas; with LookUp
// it only looks the bucket up.
func (s *Staging) Ensure(ctx context.Context) error {
	_, err := s.ensure(ctx)
	return err
}

func (s *Staging) ensure(ctx context.Context) (jetstream.ObjectStore, error) {
	var store jetstream.ObjectStore
	var err error
	if s.LookUp {
		store, err = s.JS.ObjectStore(ctx, s.Bucket)
	} else {
		store, err = s.JS.CreateOrUpdateObjectStore(ctx, service.StagingBucketConfig(s.Bucket, s.TTL, s.Replicas))
	}
	if err != nil {
		return nil, fmt.Errorf("staging bucket %s: %w", s.Bucket, err)
	}
	s.mu.Lock()
	s.store = store
	s.mu.Unlock()
	return store, nil
}

// open returns the bucket, creating it if it is missing (unless LookUp).
func (s *Staging) open(ctx context.Context) (jetstream.ObjectStore, error) {
	s.mu.Lock()
	store := s.store
	s.mu.Unlock()
	if store != nil {
		return store, nil
	}
	return s.ensure(ctx)
}

// forget drops the cached bucket after a failure, so that the next use
// opens (or recreates) it again.
func (s *Staging) forget() {
	s.mu.Lock()
	s.store = nil
	s.mu.Unlock()
}

// staged is what staging a body produced.
type staged struct {
	size    int64
	sha256  string
	dataref string
	reused  bool // an earlier, unrecorded attempt had staged the same bytes
}

// stage streams body into the object named name and returns its size and
// SHA-256. The body is never held in memory: the object store cuts it into
// chunks as it reads.
//
// An object already there is what an earlier attempt staged before it
// crashed, without a record: the body is then only hashed, and the object
// is kept when it holds the same bytes. When it holds others it is
// removed, and the caller gets ErrStaleStaging (the body is consumed).
func (s *Staging) stage(ctx context.Context, name string, body io.Reader) (staged, error) {
	store, err := s.open(ctx)
	if err != nil {
		return staged{}, unavailable("staging", err)
	}
	info, err := store.GetInfo(ctx, name)
	switch {
	case err == nil:
		return s.reuse(ctx, store, info, body)
	case !errors.Is(err, jetstream.ErrObjectNotFound):
		s.forget()
		return staged{}, unavailable("staging", err)
	}

	src := &chunkReader{r: body}
	info, err = store.Put(ctx, jetstream.ObjectMeta{
		Name: name,
		Opts: &jetstream.ObjectMetaOptions{ChunkSize: stageChunkSize},
	}, src)
	if src.err != nil {
		return staged{}, &BodyError{Err: src.err}
	}
	if err != nil {
		s.forget()
		return staged{}, unavailable("staging", err)
	}
	sum, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil || len(sum) != sha256.Size {
		return staged{}, fmt.Errorf("staging %s: object digest %q: %v", name, info.Digest, err)
	}
	return staged{size: int64(info.Size), sha256: hex.EncodeToString(sum), dataref: s.DataRef(name)}, nil // #nosec G115 -- an object size in a bucket bounded by MaxBytes, far below 2^63
}

func (s *Staging) reuse(ctx context.Context, store jetstream.ObjectStore, info *jetstream.ObjectInfo, body io.Reader) (staged, error) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return staged{}, &BodyError{Err: err}
	}
	sum := h.Sum(nil)
	got, derr := jetstream.DecodeObjectDigest(info.Digest)
	if derr == nil && string(got) == string(sum) && uint64(n) == info.Size { // #nosec G115 -- n is a byte count io.Copy returned: never negative
		return staged{size: n, sha256: hex.EncodeToString(sum), dataref: s.DataRef(info.Name), reused: true}, nil
	}
	if err := store.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return staged{}, unavailable("staging", err)
	}
	return staged{}, ErrStaleStaging
}

// chunkReader fills every read completely (the object store makes one chunk
// of each read, and request bodies arrive in small pieces), and remembers
// the error of the body, so that a failure to read it can be told from a
// failure to store it.
type chunkReader struct {
	r   io.Reader
	err error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := c.r.Read(p[n:])
		n += m
		if err == io.EOF {
			return n, io.EOF
		}
		if err != nil {
			c.err = err
			return n, err
		}
	}
	return n, nil
}
