// Package uploads is ingest's operation: it turns an HTTP upload into a
// request event of the pipeline, so that a client's retry with the same
// idempotency key resumes the operation instead of repeating it.
//
// For a new key, Submit reads the body (inline when small, otherwise
// streamed into a JetStream Object Store bucket: a claim check), records
// the upload in ingest_uploads, publishes uploads.requested.<id> and waits
// for JetStream's acknowledgement. For a known key it checks that the body
// is the same (sha256, subject, content type), never stages again, and
// publishes the request once more, as a new message, when the upload has
// been pending longer than RedriveAfter; the pipeline's markers make that
// safe. All of it runs under an advisory-lock claim on the id, so two
// requests with one key never run at once.
//
// Crash tests arm three failpoints (package failpoint) between the side
// effects of a new upload: ingest/after-stage (the body is staged in the
// object store, nothing is recorded), ingest/after-record (the upload is
// recorded, its request not published) and ingest/after-publish (JetStream
// acknowledged the request, the client has no answer yet; a re-drive hits
// it too). An injected error is a transient failure: 503.
package uploads

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/failpoint"
	"github.com/blobref/blobref/internal/marker"
	"github.com/blobref/blobref/pkg/events"
)

// Source is the CloudEvents source of the request events ingest publishes.
const Source = "/blobref/ingest"

// claimStep is the step name of ingest's claims (marker.Store.Claim).
const claimStep = "ingest"

// recordTimeout bounds recording and publishing once the body is in: they
// run on a context the client's going away cannot cancel.
const recordTimeout = 30 * time.Second

// ID returns the upload id of the request caller sent with idempotency key
// key: the first 32 lowercase hex characters of sha256(caller "\n" key).
// It is token-safe, the same for every retry, and two callers cannot
// collide.
func ID(caller, key string) string {
	sum := sha256.Sum256([]byte(caller + "\n" + key))
	return hex.EncodeToString(sum[:])[:32]
}

// Service runs uploads. Its clients are built by the caller.
type Service struct {
	Pool    *pgxpool.Pool
	Markers *marker.Store
	NC      *nats.Conn // core NATS, for waiting on uploads.completed.<id>
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
	// Metrics, if set, counts publishes and staged bodies.
	Metrics *Metrics

	mu        sync.Mutex
	dlqStream jetstream.Stream
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

// Submit runs a POST: it creates the upload or resumes it, and answers with
// its state once JetStream has acknowledged the request event.
//
// Errors: ErrBusy, ErrEmptyBody, ErrStaleStaging, *MismatchError,
// *BodyError and *UnavailableError; any other is a bug.
func (s *Service) Submit(ctx context.Context, sub Submission) (Result, error) {
	id := ID(sub.Caller, sub.Key)
	claim, err := s.Markers.Claim(ctx, id, claimStep)
	if errors.Is(err, marker.ErrBusy) {
		return Result{}, ErrBusy
	}
	if err != nil {
		return Result{}, unavailable("claim", err)
	}
	defer claim.Release() // safe to call twice

	// Subscribe before anything is published, so the completion cannot be
	// missed. Without NATS there is nothing to wait for: go on without.
	var completed *nats.Subscription
	if sub.Wait > 0 {
		if completed, err = s.subscribe(id); err == nil {
			defer completed.Unsubscribe() //nolint:errcheck // best effort
		}
	}

	snap, found, err := s.load(ctx, id)
	if err != nil {
		return Result{}, err
	}
	res := Result{Created: !found}
	if found {
		res.State, err = s.resume(ctx, snap, sub)
	} else {
		res.State, err = s.create(ctx, id, sub)
	}
	if err != nil {
		return Result{}, err
	}
	claim.Release()

	if completed == nil || res.State.State == StateCompleted || res.State.State == StateFailed {
		return res, nil
	}
	res.Waited = true
	ref := s.await(ctx, completed, res.State, sub)
	if ref == nil {
		return res, nil
	}
	// Completed: refwriter committed before it published, so Postgres has
	// the whole story; the event is the fallback.
	if snap, found, err := s.load(ctx, id); err == nil && found && snap.completed() {
		if st, err := s.state(ctx, snap); err == nil {
			res.State = st
			return res, nil
		}
	}
	res.State.State, res.State.Reference, res.State.DeadLetter = StateCompleted, ref, nil
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

// create runs the first request with a key: read, stage if large, record,
// publish.
func (s *Service) create(ctx context.Context, id string, sub Submission) (State, error) {
	limit := int64(s.InlineThreshold) + 1
	head := &bytes.Buffer{}
	if sub.Size >= 0 {
		head.Grow(int(min(sub.Size, limit)))
	}
	if _, err := head.ReadFrom(io.LimitReader(sub.Body, limit)); err != nil {
		return State{}, &BodyError{Err: err}
	}
	rec := record{
		ID: id, Caller: sub.Caller, Key: sub.Key, Subject: sub.Subject, ContentType: sub.ContentType,
		CreatedAt: s.now(),
	}
	var inline []byte
	if int64(head.Len()) < limit {
		if head.Len() == 0 {
			return State{}, ErrEmptyBody
		}
		inline = head.Bytes()
		sum := sha256.Sum256(inline)
		rec.Size, rec.SHA256 = int64(len(inline)), hex.EncodeToString(sum[:])
	} else {
		st, err := s.Staging.stage(ctx, id, io.MultiReader(head, sub.Body))
		if err != nil {
			return State{}, err
		}
		rec.Size, rec.SHA256, rec.DataRef = st.size, st.sha256, st.dataref
		s.Metrics.staged(st.reused, st.size)
		if err := inject(ctx, "after-stage"); err != nil {
			return State{}, err
		}
	}

	// The bytes are in: record and publish even if the client goes away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := s.insert(ctx, rec); err != nil {
		return State{}, err
	}
	if err := inject(ctx, "after-record"); err != nil {
		return State{}, err
	}
	if err := s.publish(ctx, &rec, inline); err != nil {
		return State{}, err
	}
	return State{
		ID: rec.ID, Subject: rec.Subject, State: StatePending,
		ContentType: rec.ContentType, Size: rec.Size, SHA256: rec.SHA256, CreatedAt: rec.CreatedAt,
		Steps: Steps{Accepted: &Step{At: *rec.PublishedAt}},
	}, nil
}

// resume runs a retry: the body must be the one first sent with the key;
// the request is published again if it has been pending long enough.
func (s *Service) resume(ctx context.Context, snap snapshot, sub Submission) (State, error) {
	h := sha256.New()
	var inline bytes.Buffer // the bytes of an inline upload, to publish again
	n := int64(0)
	if snap.DataRef == "" {
		m, err := io.Copy(io.MultiWriter(h, &inline), io.LimitReader(sub.Body, snap.Size))
		if err != nil {
			return State{}, &BodyError{Err: err}
		}
		n += m
	}
	m, err := io.Copy(h, sub.Body)
	if err != nil {
		return State{}, &BodyError{Err: err}
	}
	n += m
	var differs []string
	if n != snap.Size || hex.EncodeToString(h.Sum(nil)) != snap.SHA256 {
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
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
		if err := s.publish(ctx, &snap.record, inline.Bytes()); err != nil {
			return State{}, err
		}
	}
	return s.state(ctx, snap)
}

func (s *Service) insert(ctx context.Context, rec record) error {
	var dataref *string
	if rec.DataRef != "" {
		dataref = &rec.DataRef
	}
	tag, err := s.Pool.Exec(ctx, `
		INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, dataref, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT DO NOTHING`,
		rec.ID, rec.Caller, rec.Key, rec.Subject, rec.ContentType, rec.Size, rec.SHA256, dataref, rec.CreatedAt)
	if err != nil {
		return unavailable("record upload", err)
	}
	if tag.RowsAffected() == 0 {
		// Under the claim nobody else inserts; a row now means the claim
		// was lost (its connection died). The client's retry sorts it out.
		return ErrBusy
	}
	return nil
}

// publish publishes the request event of rec and waits for JetStream's
// acknowledgement, then records it. The first publish uses the upload id
// as Nats-Msg-Id (a retry of a publish that may have landed is
// de-duplicated); each re-drive is a new message, <id>-<n>.
func (s *Service) publish(ctx context.Context, rec *record, inline []byte) error {
	req := events.Request{
		ID: rec.ID, Source: Source, Subject: rec.Subject, ContentType: rec.ContentType,
		Time: rec.CreatedAt, SHA256: rec.SHA256,
	}
	if rec.DataRef != "" {
		req.DataRef = rec.DataRef
	} else {
		req.Data = inline
	}
	ev, err := events.NewRequested(req)
	if err != nil {
		return fmt.Errorf("uploads: request event of %s: %w", rec.ID, err)
	}
	msgID := rec.ID
	if rec.PublishCount > 0 {
		msgID = fmt.Sprintf("%s-%d", rec.ID, rec.PublishCount)
	}
	msg, err := ev.Msg(msgID)
	if err != nil {
		return fmt.Errorf("uploads: request event of %s: %w", rec.ID, err)
	}
	pctx, cancel := context.WithTimeout(ctx, s.publishTimeout())
	defer cancel()
	if _, err := s.JS.PublishMsg(pctx, msg); err != nil {
		return unavailable("publish", err)
	}
	s.Metrics.published(rec.PublishCount > 0)
	at := s.now()
	_, err = s.Pool.Exec(ctx,
		`UPDATE ingest_uploads SET published_at = $2, publish_count = publish_count + 1 WHERE id = $1`,
		rec.ID, at)
	if err != nil {
		return unavailable("record publish", err)
	}
	rec.PublishedAt = &at
	rec.PublishCount++
	return inject(ctx, "after-publish")
}

// inject runs the failpoint ingest/<point>. An injected error is a
// transient failure: the client retries.
func inject(ctx context.Context, point string) error {
	if err := failpoint.Inject(ctx, "ingest/"+point); err != nil {
		return unavailable(point, err)
	}
	return nil
}

// subscribe subscribes to the completion of upload id, and makes sure the
// server knows before returning.
func (s *Service) subscribe(id string) (*nats.Subscription, error) {
	sub, err := s.NC.SubscribeSync(events.CompletedSubject(id))
	if err != nil {
		return nil, err
	}
	if err := s.NC.FlushTimeout(s.publishTimeout()); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

// await waits up to sub.Wait for the completed event of the upload st
// describes and returns its reference, or nil when none came in time.
func (s *Service) await(ctx context.Context, completed *nats.Subscription, st State, sub Submission) *events.Reference {
	ctx, cancel := context.WithTimeout(ctx, sub.Wait)
	defer cancel()
	if sub.Interrupt != nil {
		stop := context.AfterFunc(sub.Interrupt, cancel)
		defer stop()
	}
	for {
		msg, err := completed.NextMsgWithContext(ctx)
		if err != nil {
			return nil
		}
		ev, err := events.Decode(msg.Subject, msg.Header, msg.Data)
		if err != nil || ev.Type != events.TypeCompleted || ev.ID != st.ID || ev.SHA256 != st.SHA256 || ev.Ref == nil {
			continue // not the pipeline's completion of this upload
		}
		return ev.Ref
	}
}
