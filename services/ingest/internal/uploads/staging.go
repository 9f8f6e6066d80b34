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

// stageChunkSize is the size of the chunks staged bodies are cut into:
// one JetStream message each, well inside the default max_payload (1 MB).
const stageChunkSize = 512 << 10

// Staging is the JetStream Object Store bucket large bodies are
// claim-checked in. Its TTL makes staged objects expire on their own.
type Staging struct {
	JS       jetstream.JetStream
	Bucket   string
	TTL      time.Duration
	Replicas int
	// MaxBytes bounds what the bucket stores; 0 or less is no bound.
	MaxBytes int64
	// RetryFor is how long staging retries a chunk JetStream refuses for
	// the moment (429 too many requests, 503, a timeout) before the request
	// fails with 503 [30s].
	RetryFor time.Duration
	// PublishTimeout bounds the wait for JetStream to acknowledge one chunk
	// [5s].
	PublishTimeout time.Duration
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
		store, err = s.JS.CreateOrUpdateObjectStore(ctx, service.StagingBucketConfig(s.Bucket, s.TTL, s.Replicas, s.MaxBytes))
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
	reused  bool  // an earlier, unrecorded attempt had staged the same bytes
	resumed int64 // bytes an earlier attempt had staged, verified and kept
}

// stage streams body into the object named name and returns its size and
// SHA-256. The body is never held in memory: it is cut into chunks as it
// is read (see stageWriter), and written as an ordinary Object Store
// object, which blobwriter reads as the claim check.
//
// An object already there is what an earlier attempt staged before it
// crashed, without a record: the body is then only hashed, and the object
// is kept when it holds the same bytes. When it holds others it is
// removed, and the caller gets ErrStaleStaging (the body is consumed).
// Chunks an earlier attempt staged without finishing the object are
// resumed: their bytes are read from the body and verified, not staged
// again.
func (s *Staging) stage(ctx context.Context, name string, body io.Reader, m *Metrics) (staged, error) {
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
	stream, err := s.JS.Stream(ctx, objectStream(s.Bucket))
	if err != nil {
		s.forget()
		return staged{}, unavailable("staging", err)
	}
	w := &stageWriter{s: s, stream: stream, name: name, metrics: m}
	return w.write(ctx, body)
}

func (s *Staging) reuse(ctx context.Context, store jetstream.ObjectStore, info *jetstream.ObjectInfo, body io.Reader) (staged, error) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return staged{}, &BodyError{Err: err}
	}
	sum := h.Sum(nil)
	got, ok := events.ObjectDigest(info.Digest)
	if ok && string(got) == string(sum) && uint64(n) == info.Size { // #nosec G115 -- n is a byte count io.Copy returned: never negative
		return staged{size: n, sha256: hex.EncodeToString(sum), dataref: s.DataRef(info.Name), reused: true}, nil
	}
	if err := store.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return staged{}, unavailable("staging", err)
	}
	return staged{}, ErrStaleStaging
}
