package claimcheck

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

	"github.com/blobref/blobref/pkg/events"
)

// stageChunkSize is the size of the chunks staged bodies are cut into:
// one JetStream message each, well inside the default max_payload (1 MB).
const stageChunkSize = 512 << 10

// Staging is the JetStream Object Store bucket large bodies are
// claim-checked in, and its writer. Its TTL makes staged objects expire on
// their own.
type Staging struct {
	JS       jetstream.JetStream
	Bucket   string
	TTL      time.Duration
	Replicas int
	// MaxBytes bounds what the bucket stores; 0 or less is no bound.
	MaxBytes int64
	// RetryFor is how long staging retries a chunk JetStream refuses for
	// the moment (429 too many requests, 503, a timeout) before Stage gives
	// up with an *UnavailableError [30s].
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
		store, err = s.JS.CreateOrUpdateObjectStore(ctx, BucketConfig(s.Bucket, s.TTL, s.Replicas, s.MaxBytes))
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

// Staged is what staging a body produced.
type Staged struct {
	Size    int64
	SHA256  string
	DataRef string
	Reused  bool  // an earlier, unrecorded attempt had staged the same bytes
	Resumed int64 // bytes an earlier attempt had staged, verified and kept
}

// Hooks is what Stage tells its caller as it goes, and where the caller
// may fail it.
type Hooks interface {
	// Wrote is called with the size of each chunk stored.
	Wrote(n int)
	// Retried is called for each chunk sent again after a refusal.
	Retried()
	// MidStage is called once two chunks are staged and more are to
	// come: a failure there is one a retry resumes from (a failpoint).
	MidStage(ctx context.Context) error
}

type noHooks struct{}

func (noHooks) Wrote(int)                      {}
func (noHooks) Retried()                       {}
func (noHooks) MidStage(context.Context) error { return nil }

// Stage streams body into the object named name and returns its size and
// SHA-256. The body is never held in memory: it is cut into chunks as it
// is read (see stageWriter), and written as an ordinary Object Store
// object, which blobwriter reads as the claim check.
//
// An object already there is what an earlier attempt staged before it
// crashed, without a record: the body is then only hashed, and the object
// is kept when it holds the same bytes. When it holds others it is
// removed, and the caller gets ErrStale (the body is consumed).
// Chunks an earlier attempt staged without finishing the object are
// resumed: their bytes are read from the body and verified, not staged
// again. hooks may be nil.
//
// Errors: ErrStale, *BodyError, *StoreFullError, *UnavailableError, and
// what hooks.MidStage returns.
func (s *Staging) Stage(ctx context.Context, name string, body io.Reader, hooks Hooks) (Staged, error) {
	if hooks == nil {
		hooks = noHooks{}
	}
	store, err := s.open(ctx)
	if err != nil {
		return Staged{}, unavailable(err)
	}
	info, err := store.GetInfo(ctx, name)
	switch {
	case err == nil:
		return s.reuse(ctx, store, info, body)
	case !errors.Is(err, jetstream.ErrObjectNotFound):
		s.forget()
		return Staged{}, unavailable(err)
	}
	stream, err := s.JS.Stream(ctx, streamName(s.Bucket))
	if err != nil {
		s.forget()
		return Staged{}, unavailable(err)
	}
	w := &stageWriter{s: s, stream: stream, name: name, hooks: hooks}
	return w.write(ctx, body)
}

func (s *Staging) reuse(ctx context.Context, store jetstream.ObjectStore, info *jetstream.ObjectInfo, body io.Reader) (Staged, error) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return Staged{}, &BodyError{Err: err}
	}
	sum := h.Sum(nil)
	got, ok := ObjectDigest(info.Digest)
	if ok && string(got) == string(sum) && uint64(n) == info.Size { // #nosec G115 -- n is a byte count io.Copy returned: never negative
		return Staged{Size: n, SHA256: hex.EncodeToString(sum), DataRef: s.DataRef(info.Name), Reused: true}, nil
	}
	if err := store.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return Staged{}, unavailable(err)
	}
	return Staged{}, ErrStale
}
