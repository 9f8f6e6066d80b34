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
// Crash tests arm three failpoints (package failpoint) between the side
// effects of a new upload: ingest/after-stage (the body is staged in the
// object store, nothing is recorded), ingest/after-record (the upload is
// recorded, its request not published) and ingest/after-publish (JetStream
// acknowledged the request and the publish is recorded, the client has no
// answer yet; a re-drive hits it too). An injected error is a transient
// failure: 503.
package uploads

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/failpoint"
	"github.com/blobref/blobref/pkg/events"
)

// Source is the CloudEvents source of the request events ingest publishes.
const Source = "/blobref/ingest"

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
	Pool    *pgxpool.Pool
	NC      *nats.Conn // core NATS, for the completed events
	JS      jetstream.JetStream
	Staging *Staging
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

	once        sync.Once
	started     chan struct{}
	batches     *batcher[*job]
	completions completions

	mu        sync.Mutex
	dlqStream jetstream.Stream
}

func (s *Service) init() {
	s.once.Do(func() {
		s.started = make(chan struct{})
		s.batches = newBatcher(batchLanes, batchSize, s.flush)
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
// Errors: ErrBusy, ErrEmptyBody, ErrStaleStaging, *MismatchError,
// *BodyError and *UnavailableError; any other is a bug.
func (s *Service) Submit(ctx context.Context, sub Submission) (Result, error) {
	s.init()
	id := ID(sub.Caller, sub.Key)
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
	var res Result
	if len(head) <= s.InlineThreshold {
		res, err = s.submitInline(ctx, id, sub, head)
	} else {
		res, err = s.submitStaged(ctx, id, sub, head)
	}
	if err != nil || w == nil || res.State.State == StateCompleted || res.State.State == StateFailed {
		return res, err
	}
	res.Waited = true
	if ref := w.await(ctx, res.State, sub); ref != nil {
		res.State = completedState(res.State, ref, s.now())
	}
	return res, nil
}

// Status returns the state of upload id, which must belong to caller.
// Errors: ErrNotFound, *UnavailableError.
func (s *Service) Status(ctx context.Context, caller, id string) (State, error) {
	if !events.ValidID(id) {
		return State{}, ErrNotFound
	}
	snap, found, err := s.load(ctx, id)
	if err != nil {
		return State{}, err
	}
	if !found || snap.Caller != caller {
		return State{}, ErrNotFound
	}
	return s.state(ctx, snap)
}

// readHead reads the body up to one byte past the inline threshold: all of
// an inline body.
func (s *Service) readHead(sub Submission) ([]byte, error) {
	limit := int64(s.InlineThreshold) + 1
	head := &bytes.Buffer{}
	if sub.Size >= 0 {
		head.Grow(int(min(sub.Size, limit)))
	}
	if _, err := head.ReadFrom(io.LimitReader(sub.Body, limit)); err != nil {
		return nil, &BodyError{Err: err}
	}
	return head.Bytes(), nil
}

// fingerprint is what a retry's body must match.
type fingerprint struct {
	size   int64
	sha256 string
}

// submitInline runs a request whose body travels inline: record and
// publish in a batch.
func (s *Service) submitInline(ctx context.Context, id string, sub Submission, body []byte) (Result, error) {
	if len(body) == 0 {
		return Result{}, ErrEmptyBody
	}
	sum := sha256.Sum256(body)
	fp := fingerprint{size: int64(len(body)), sha256: hex.EncodeToString(sum[:])}
	rec := s.newRecord(id, sub)
	rec.Size, rec.SHA256 = fp.size, fp.sha256
	return s.record(ctx, &job{ctx: context.WithoutCancel(ctx), rec: rec, inline: body, insert: true}, sub, fp)
}

// submitStaged runs a request whose body is too large to travel inline:
// unless the key is recorded, lease it, stream the body into the staging
// bucket, then record and publish in a batch.
func (s *Service) submitStaged(ctx context.Context, id string, sub Submission, head []byte) (Result, error) {
	body := io.MultiReader(bytes.NewReader(head), sub.Body)
	holder := newHolder()
	snap, found, leased, err := s.takeLease(ctx, id, holder)
	switch {
	case err != nil:
		return Result{}, err
	case found:
		if snap.busy {
			return Result{}, ErrBusy
		}
		fp, err := hashBody(body)
		if err != nil {
			return Result{}, err
		}
		st, err := s.resume(ctx, snap, sub, fp, nil)
		return Result{State: st}, err
	case !leased:
		return Result{}, ErrBusy
	}
	rec := s.newRecord(id, sub)
	if err := s.stage(ctx, &rec, holder, body); err != nil {
		s.releaseLease(ctx, id, holder)
		return Result{}, err
	}
	j := &job{ctx: context.WithoutCancel(ctx), rec: rec, insert: true, holder: holder}
	res, err := s.record(ctx, j, sub, fingerprint{size: rec.Size, sha256: rec.SHA256})
	if !j.won {
		s.releaseLease(ctx, id, holder) // unless the insert deleted it
	}
	return res, err
}

func (s *Service) newRecord(id string, sub Submission) record {
	return record{
		ID: id, Caller: sub.Caller, Key: sub.Key, Subject: sub.Subject, ContentType: sub.ContentType,
		CreatedAt: s.now(),
	}
}

// stage streams body into the staging bucket under the lease of holder, and
// completes rec with what it staged.
func (s *Service) stage(ctx context.Context, rec *record, holder string, body io.Reader) error {
	lctx, stop, lost := s.holdLease(ctx, rec.ID, holder)
	st, err := s.Staging.stage(lctx, rec.ID, body)
	stop()
	if reason := lost(); reason != nil {
		return reason
	}
	if err != nil {
		return err
	}
	s.Metrics.staged(st.reused, st.size)
	rec.Size, rec.SHA256, rec.DataRef = st.size, st.sha256, st.dataref
	return inject(ctx, "after-stage")
}

// record runs the batch job of a new upload, and answers for it: pending
// when it recorded the upload, the upload resumed when another request had.
func (s *Service) record(ctx context.Context, j *job, sub Submission, fp fingerprint) (Result, error) {
	s.batches.do(j)
	switch {
	case j.err != nil:
		return Result{}, j.err
	case j.won:
		return Result{Created: true, State: pendingState(j.rec, j.at)}, nil
	case j.snap == nil:
		return Result{}, ErrBusy
	}
	st, err := s.resume(ctx, *j.snap, sub, fp, j.inline)
	return Result{State: st}, err
}

// pendingState is the state of an upload just published.
func pendingState(rec record, at time.Time) State {
	return State{
		ID: rec.ID, Subject: rec.Subject, State: StatePending,
		ContentType: rec.ContentType, Size: rec.Size, SHA256: rec.SHA256, CreatedAt: rec.CreatedAt,
		Steps: Steps{Accepted: &Step{At: at}},
	}
}

// resume runs a retry: the body must be the one first sent with the key;
// the request is published again if it never was, or has been pending long
// enough. inline holds the bytes of an inline upload.
func (s *Service) resume(ctx context.Context, snap snapshot, sub Submission, fp fingerprint, inline []byte) (State, error) {
	if snap.busy {
		return State{}, ErrBusy
	}
	var differs []string
	if fp.size != snap.Size || fp.sha256 != snap.SHA256 {
		differs = append(differs, "body")
	}
	if sub.Subject != snap.Subject {
		differs = append(differs, "subject")
	}
	if sub.ContentType != snap.ContentType {
		differs = append(differs, "content type")
	}
	if differs != nil {
		return State{}, &MismatchError{ID: snap.ID, Fields: differs}
	}

	if !snap.completed() && (snap.PublishedAt == nil || s.now().Sub(*snap.PublishedAt) >= s.RedriveAfter) {
		j := &job{ctx: context.WithoutCancel(ctx), rec: snap.record, inline: inline}
		s.batches.do(j)
		if j.err != nil {
			return State{}, j.err
		}
		snap.PublishedAt = &j.at
		snap.PublishCount++
	}
	return s.state(ctx, snap)
}

// hashBody reads body to its end and returns its fingerprint.
func hashBody(body io.Reader) (fingerprint, error) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return fingerprint{}, &BodyError{Err: err}
	}
	return fingerprint{size: n, sha256: hex.EncodeToString(h.Sum(nil))}, nil
}

// inject runs the failpoint ingest/<point>. An injected error is a
// transient failure: the client retries.
func inject(ctx context.Context, point string) error {
	if err := failpoint.Inject(ctx, "ingest/"+point); err != nil {
		return unavailable(point, err)
	}
	return nil
}
