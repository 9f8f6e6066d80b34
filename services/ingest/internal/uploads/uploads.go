// Package uploads is ingest's operation: it turns an HTTP upload into a
// request event of the pipeline, so that a client's retry with the same
// idempotency key resumes the operation instead of repeating it.
//
// For a new key, Submit reads the body (inline when small, otherwise
// streamed into a JetStream Object Store bucket: a claim check, under a
// lease on the key), records the upload in ingest_uploads, publishes
// uploads.requested.<id> and waits for JetStream's acknowledgement. The
// requests that arrive together are recorded, published and their
// publishes recorded as one batch (a group commit): one Postgres round
// trip inserts every new upload of the batch, and its
// INSERT ... ON CONFLICT (id) DO NOTHING decides who owns each key. The
// inline bytes stay in the record (an outbox) until JetStream has them.
//
// A request that finds its key recorded resumes the upload: while the
// request that recorded it is still publishing it (its claim has not
// lapsed), or a large body with the key is still streaming in (its lease
// is live), the answer is ErrBusy; otherwise it checks that the body is
// the same (sha256, subject, content type), never stages again, and
// publishes the request once more, as a new message, when it was never
// published or has been pending longer than RedriveAfter; the pipeline's
// markers make that safe. No Postgres connection is held while a body
// streams in.
//
// Crash tests arm four failpoints (package failpoint) between the side
// effects of a new upload: ingest/mid-stage (two chunks of a larger body
// are staged, the rest is not: a retry resumes), ingest/after-stage (the
// body is staged in the object store, nothing is recorded), ingest/after-record (the upload is
// recorded, its request not published) and ingest/after-publish (JetStream
// acknowledged the request and the publish is recorded, the client has no
// answer yet; a re-drive hits it too). An injected error is a transient
// failure: 503.
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/failpoint"
)

// ID returns the upload id of the request caller sent with idempotency key
// key: the first 32 lowercase hex characters of sha256(caller "\n" key).
// It is token-safe, the same for every retry, and two callers cannot
// collide.
func ID(caller, key string) string {
	sum := sha256.Sum256([]byte(caller + "\n" + key))
	return hex.EncodeToString(sum[:])[:32]
}

// Service runs uploads. Its clients are built by the caller; Run must run
// for Prefer: wait to be honoured.
type Service struct {
	// Pool is Postgres: a *pgxpool.Pool, or BoundedPool of one so that no
	// request waits for a connection without end.
	Pool    DB
	NC      *nats.Conn // core NATS, for the completed events
	JS      jetstream.JetStream
	Staging *claimcheck.Staging
	// Quota, if set, bounds each caller's staged bytes in flight.
	Quota *StagedQuota
	// InlineThreshold is the largest body that travels inline in the event.
	InlineThreshold int
	// RedriveAfter is how long an upload may be pending before a retry
	// publishes its request again.
	RedriveAfter time.Duration
	// PublishTimeout bounds waiting for JetStream to acknowledge a publish
	// [10s].
	PublishTimeout time.Duration
	// Now is the clock [time.Now].
	Now func() time.Time
	// Metrics, if set, counts publishes, batches and staged bodies.
	Metrics *Metrics
	// TracerProvider, if set, traces each publish and each wait for a
	// completion (docs/tracing.md); nil is tracing off.
	TracerProvider trace.TracerProvider

	once        sync.Once
	started     chan struct{}
	batches     *batcher[*job]
	completions completions

	mu     sync.Mutex
	stream jetstream.Stream // UPLOADS, looked up once
}

func (s *Service) init() {
	s.once.Do(func() {
		s.started = make(chan struct{})
		s.batches = newBatcher(batchLanes, batchSize, batchSpill, s.flush)
		s.completions.completed = s.Quota.stored
	})
}

// Run subscribes to the completed events that Prefer: wait waits for, and
// deletes long-expired staging leases now and then, until ctx is done. Call
// it once.
func (s *Service) Run(ctx context.Context) error {
	s.init()
	if err := s.completions.subscribe(s.NC); err != nil {
		return fmt.Errorf("uploads: subscribe to completed events: %w", err)
	}
	defer s.completions.unsubscribe()
	defer s.Quota.close()
	close(s.started)
	tick := time.NewTicker(leaseSweep)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s.sweepLeases(ctx)
		}
	}
}

// Started is closed once Run has subscribed to the completed events.
func (s *Service) Started() <-chan struct{} {
	s.init()
	return s.started
}

// Submission is one POST of an upload.
type Submission struct {
	Caller      string
	Key         string // the Idempotency-Key
	Subject     string
	ContentType string
	Body        io.Reader
	// Size is the announced size of the body (Content-Length), -1 when unknown.
	Size int64
	// Wait, when positive, is how long to wait for the upload to complete.
	Wait time.Duration
	// Interrupt, when done, ends a wait early (the server shuts down).
	Interrupt context.Context
}

// Result is the outcome of Submit.
type Result struct {
	State State
	// Created is true when this request created the upload, false for a
	// retry.
	Created bool
	// Waited is true when Submit waited for completion (it may have timed
	// out).
	Waited bool
}

func (s *Service) now() time.Time {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	// Postgres keeps microseconds; the event time must survive a round trip.
	return now().UTC().Truncate(time.Microsecond)
}

func (s *Service) publishTimeout() time.Duration {
	if s.PublishTimeout > 0 {
		return s.PublishTimeout
	}
	return 10 * time.Second
}

// recordTimeout bounds a batch: recording, publishing and recording the
// publishes. The claim of an upload recorded in a batch lasts as long from
// the insert on, so it outlives the batch.
func (s *Service) recordTimeout() time.Duration { return s.publishTimeout() + 5*time.Second }

// Submit runs a POST: it creates the upload or resumes it, and answers with
// its state once JetStream has acknowledged the request event.
//
// Before it reads the body it checks the request against the event
// contract, and charges a large body to the caller's quota.
//
// Errors: ErrBusy, ErrEmptyBody, ErrStaleStaging, *RequestError,
// *QuotaError, *MismatchError, *BodyError and *UnavailableError; any other
// is a bug.
func (s *Service) Submit(ctx context.Context, sub Submission) (res Result, err error) {
	s.init()
	id := ID(sub.Caller, sub.Key)
	if err := checkRequest(id, sub); err != nil {
		return Result{}, err
	}
	c, err := s.Quota.open(sub.Caller, sub.Size, s.InlineThreshold)
	if err != nil {
		return Result{}, err
	}
	sub.Body = c.reader(sub.Body, sub.Size, s.InlineThreshold)
	defer func() {
		// A staged upload this request recorded counts until it is stored.
		if err == nil && res.Created && res.State.State != StateCompleted && res.State.Size > int64(s.InlineThreshold) {
			c.hold(id)
		} else {
			c.release()
		}
	}()
	// Wait before anything is published, so that the completion cannot be
	// missed.
	var w *waiter
	if sub.Wait > 0 {
		w = s.completions.wait(id)
		defer s.completions.done(w)
	}
	head, err := s.readHead(sub)
	if err != nil {
		return Result{}, err
	}
	if len(head) <= s.InlineThreshold {
		res, err = s.submitInline(ctx, id, sub, head)
	} else {
		res, err = s.submitStaged(ctx, id, sub, head)
	}
	if err != nil || w == nil || res.State.State == StateCompleted || res.State.State == StateFailed {
		return res, err
	}
	res.Waited = true
	wctx, span := s.startWait(ctx, id)
	completed := w.await(wctx, res.State, sub)
	endWait(span, completed)
	if completed != nil {
		now := s.now()
		res.State = completedState(res.State, completed.Ref, now)
	}
	return res, nil
}

// Status returns the state of upload id, which must belong to caller: an
// upload caller sent through ingest, or one published straight over NATS
// whose events name caller as its owner (once a step stored or
// dead-lettered it).
// Errors: ErrNotFound, *UnavailableError.
func (s *Service) Status(ctx context.Context, caller, id string) (State, error) {
	if !events.ValidID(id) {
		return State{}, ErrNotFound
	}
	snap, found, err := s.load(ctx, id)
	if err != nil {
		return State{}, err
	}
	if found {
		if snap.Caller != caller {
			return State{}, ErrNotFound
		}
		// The read model may be a moment behind the events: a GET right
		// after a Prefer: wait answer said completed says so too.
		return s.catchUp(ctx, snap.state()), nil
	}
	return s.loadEventsOnly(ctx, caller, id)
}

// checkRequest applies the event contract's rules to what the request event
// of upload id will carry, before anything is recorded or staged: a request
// that passes can be published. The bytes are not known yet; a placeholder
// stands in for them.
func checkRequest(id string, sub Submission) error {
	_, err := events.NewRequested(events.Request{
		ID: id, Source: events.SourceIngest, Owner: sub.Caller, Subject: sub.Subject, ContentType: sub.ContentType,
		Data: []byte{0}, Time: time.Unix(0, 0),
	})
	if ie, ok := errors.AsType[*events.InvalidError](err); ok {
		return &RequestError{Attribute: ie.Attribute, Msg: ie.Msg}
	}
	if err != nil {
		return &RequestError{Msg: err.Error()}
	}
	return nil
}

// inject runs the failpoint ingest/<point>. An injected error is a
// transient failure: the client retries.
func inject(ctx context.Context, point string) error {
	if err := failpoint.Inject(ctx, "ingest/"+point); err != nil {
		return unavailable(point, err)
	}
	return nil
}
