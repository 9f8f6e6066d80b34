package uploads

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/pkg/events"
)

// The states of an upload.
const (
	// StatePending: accepted, the bytes are not stored yet.
	StatePending = "pending"
	// StateStored: the bytes are in the blob store, the reference is not recorded yet.
	StateStored = "stored"
	// StateCompleted: the reference is recorded.
	StateCompleted = "completed"
	// StateFailed: a step gave up on the upload (see DeadLetter).
	StateFailed = "failed"
)

// State is what a client sees of an upload.
type State struct {
	ID          string    `json:"id"`
	Subject     string    `json:"subject"`
	State       string    `json:"state"`
	ContentType string    `json:"contentType"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	CreatedAt   time.Time `json:"createdAt"`
	Steps       Steps     `json:"steps"`
	// Reference is the recorded reference, when completed.
	Reference *events.Reference `json:"reference,omitempty"`
	// DeadLetter says why the upload failed, when it did.
	DeadLetter *DeadLetter `json:"deadLetter,omitempty"`
}

// Steps holds the time each finished step finished; a step not finished is
// absent.
type Steps struct {
	// Accepted: JetStream acknowledged the request event (the latest time,
	// after a re-drive).
	Accepted *Step `json:"accepted,omitempty"`
	// Blob: blobwriter stored the bytes.
	Blob *Step `json:"blob,omitempty"`
	// Ref: refwriter recorded the reference.
	Ref *Step `json:"ref,omitempty"`
}

// Step is a finished step.
type Step struct {
	At time.Time `json:"at"`
}

// DeadLetter is why a step gave up on an upload: the dead letter's reason
// and step, and a message that says what the reason means. The step's own
// error text, which may come from a dependency, is not shown to callers:
// it stays in the dead letter (Blobref-Dead-Error) and the step's log, for
// operators.
type DeadLetter struct {
	Reason  string    `json:"reason"`
	Step    string    `json:"step"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// deadLetterMessages say what each dead-letter reason means to a caller.
var deadLetterMessages = map[string]string{
	events.ReasonMalformed:        "the request event could not be decoded",
	events.ReasonInvalid:          "the request event breaks a rule of the event contract",
	events.ReasonUnknownType:      "the event is not of a type the step consumes",
	events.ReasonTooLarge:         "the inline bytes are larger than the pipeline accepts",
	events.ReasonConflict:         "the upload id is already recorded for other bytes, another owner or another subject",
	events.ReasonDigestMismatch:   "the bytes do not match their sha256",
	events.ReasonClaimMissing:     "the staged bytes were gone before they were stored",
	events.ReasonRetriesExhausted: "the step failed on every delivery it was allowed and gave up",
	events.ReasonExpired:          "the event is older than the pipeline's retention and was not run again",
}

// deadLetterMessage is the message of reason.
func deadLetterMessage(reason string) string {
	if m, ok := deadLetterMessages[reason]; ok {
		return m
	}
	return "the step gave up on the upload"
}

// record is a row of ingest_uploads.
type record struct {
	ID           string
	Caller       string
	Key          string
	Subject      string
	ContentType  string
	Size         int64
	SHA256       string
	DataRef      string // "" when inline
	CreatedAt    time.Time
	PublishedAt  *time.Time
	PublishedSeq *int64 // UPLOADS sequence of the latest publish
	PublishCount int
}

// snapshot is a record with what the pipeline has done for it, as ingest's
// read model knows it.
type snapshot struct {
	record
	// busy: the request that recorded the upload is still publishing it
	// (its claim has not lapsed).
	busy bool
	view view
}

func (s *snapshot) completed() bool { return s.view.completed() }

// snapshotCompleted is completed in SQL, over the snapshotJoins.
const snapshotCompleted = `(rm.completed_at IS NOT NULL AND rm.ref IS NOT NULL)`

// snapshotColumns are the columns a snapshotScan reads: the upload u and
// what the read model v says of it, left-joined (snapshotJoins), so that
// each may be NULL.
const snapshotColumns = `
	u.id, u.caller, u.idempotency_key, u.subject, u.content_type, u.size, u.sha256,
	u.dataref, u.created_at, u.published_at, u.published_seq, u.publish_count,
	u.published_at IS NULL AND u.claimed_until > now(), ` + viewColumns

const snapshotJoins = `
	LEFT JOIN ingest_upload_view rm ON rm.id = u.id`

const selectSnapshot = `SELECT ` + snapshotColumns + ` FROM ingest_uploads u ` + snapshotJoins + ` WHERE u.id = $1`

// snapshotScan receives the snapshotColumns of a row.
type snapshotScan struct {
	id, caller, key, subject, contentType, sha, dataref *string
	size                                                *int64
	createdAt, publishedAt                              *time.Time
	publishedSeq                                        *int64
	publishCount                                        *int
	busy                                                *bool
	view                                                viewScan
}

// targets are the Scan destinations of the snapshotColumns.
func (c *snapshotScan) targets() []any {
	return append([]any{
		&c.id, &c.caller, &c.key, &c.subject, &c.contentType, &c.size, &c.sha,
		&c.dataref, &c.createdAt, &c.publishedAt, &c.publishedSeq, &c.publishCount, &c.busy,
	}, c.view.targets()...)
}

// snapshot returns what was scanned; ok is false when the row had no upload.
func (c *snapshotScan) snapshot() (snap snapshot, ok bool) {
	if c.id == nil {
		return snapshot{}, false
	}
	snap.record = record{
		ID: *c.id, Caller: *c.caller, Key: *c.key, Subject: *c.subject, ContentType: *c.contentType,
		Size: *c.size, SHA256: *c.sha, CreatedAt: c.createdAt.UTC(), PublishedAt: utc(c.publishedAt),
		PublishedSeq: copyInt(c.publishedSeq), PublishCount: *c.publishCount,
	}
	if c.dataref != nil {
		snap.DataRef = *c.dataref
	}
	snap.busy = c.busy != nil && *c.busy
	snap.view = c.view.view(snap.ID)
	return snap, true
}

// utc returns a copy of *t in UTC (the scan's targets are reused row after
// row), or nil.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// load reads the snapshot of upload id; ok is false when there is none.
func (s *Service) load(ctx context.Context, id string) (snap snapshot, ok bool, err error) {
	var c snapshotScan
	err = s.Pool.QueryRow(ctx, selectSnapshot, id).Scan(c.targets()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return snapshot{}, false, nil
	}
	if err != nil {
		return snapshot{}, false, unavailable("read upload", err)
	}
	snap, ok = c.snapshot()
	return snap, ok, nil
}

// state is the client's view of a snapshot.
func (snap snapshot) state() State {
	st := State{
		ID: snap.ID, Subject: snap.Subject,
		ContentType: snap.ContentType, Size: snap.Size, SHA256: snap.SHA256, CreatedAt: snap.CreatedAt,
	}
	if snap.PublishedAt != nil {
		st.Steps.Accepted = &Step{At: snap.PublishedAt.UTC()}
	}
	snap.view.fold(&st, snap.PublishedSeq)
	return st
}
