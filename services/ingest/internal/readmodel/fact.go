// Package readmodel is ingest's read model of uploads: a projection, in
// ingest's own table ingest_upload_view, of what the pipeline's events say
// happened to each upload. Its durable consumers (events.IngestViewConsumers)
// fold in the blob_stored and completed events of UPLOADS and the dead
// letters of UPLOADS_DLQ; GET /v1/uploads reads the table, and no other
// service's tables or streams.
//
// Only events that the pipeline's own steps publish are folded in (NATS
// permissions keep producers off those subjects), so the owner a row
// records is the one the steps checked: an upload published straight over
// NATS, not through ingest, is visible to its owner once blobwriter stored
// it or a step dead-lettered it.
//
// Every fact merges into its row so that the result does not depend on
// order or repetition: the first owner, subject, fingerprint, stored and
// completed times (and the reference of the first completion) win, the
// latest progress wins, and so does the dead letter with the highest
// UPLOADS_DLQ sequence. A replay, a redelivery or a completed event
// arriving before its blob_stored leaves the same row.
package readmodel

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/events"
)

// Fact is what one event says of one upload. Zero fields say nothing.
type Fact struct {
	ID                          string
	Owner, Subject, ContentType string
	Size                        int64
	SHA256                      string
	// EventTime is the request's event time, which every event carries.
	EventTime *time.Time
	// StoredAt, CompletedAt: the stream time of a blob_stored or completed
	// event; ProgressSeq its UPLOADS sequence (0: unknown).
	StoredAt, CompletedAt *time.Time
	ProgressSeq           uint64
	// Ref is the reference a completed event recorded.
	Ref *events.Reference
	// Dead is a dead letter of one of the upload's events.
	Dead *Dead
}

// Dead is a dead letter as the read model keeps it.
type Dead struct {
	// Seq is its sequence in UPLOADS_DLQ; OrigSeq the UPLOADS sequence of
	// the message it dead-lettered (0: unknown).
	Seq, OrigSeq uint64
	// Reason and Step are its Blobref-Dead-Reason and -Step; At its
	// Blobref-Dead-Time (StoredAt when absent).
	Reason, Step string
	At           time.Time
}

// Stored is the fact of blob_stored event ev, stored in UPLOADS at at with
// sequence seq.
func Stored(ev *events.Event, at time.Time, seq uint64) Fact {
	f := fromEvent(ev)
	at = at.UTC()
	f.StoredAt, f.ProgressSeq = &at, seq
	if ev.Blob != nil {
		f.ContentType, f.Size = ev.Blob.ContentType, ev.Blob.Size
	}
	return f
}

// Completed is the fact of completed event ev, stored in UPLOADS at at with
// sequence seq (0 when not known).
func Completed(ev *events.Event, at time.Time, seq uint64) Fact {
	f := fromEvent(ev)
	at = at.UTC()
	f.CompletedAt, f.ProgressSeq = &at, seq
	if ev.Ref != nil {
		ref := *ev.Ref
		f.Ref = &ref
		f.ContentType, f.Size = ref.Blob.ContentType, ref.Blob.Size
	}
	return f
}

func fromEvent(ev *events.Event) Fact {
	t := ev.Time.UTC()
	return Fact{ID: ev.ID, Owner: ev.Owner, Subject: ev.Subject, SHA256: ev.SHA256, EventTime: &t}
}

// DeadLetter is the fact of the dead letter stored in UPLOADS_DLQ at
// sequence seq and time at, on subject with header and data. ok is false
// for a message that is not a dead letter of an upload's event. When the
// original event can be read, its owner and subject come with it.
func DeadLetter(subject string, header nats.Header, data []byte, seq uint64, at time.Time) (f Fact, ok bool) {
	d, err := events.ParseDeadLetter(header)
	if err != nil {
		return Fact{}, false
	}
	orig, _ := strings.CutPrefix(subject, "dlq.")
	if d.Subject != "" {
		orig = d.Subject
	}
	id := uploadID(orig)
	if id == "" {
		return Fact{}, false
	}
	at = at.UTC()
	dead := &Dead{Seq: seq, Reason: d.Reason, Step: d.Step, At: d.Time.UTC()}
	if d.Stream == events.StreamName {
		dead.OrigSeq = d.Sequence
	}
	if d.Time.IsZero() {
		dead.At = at
	}
	f = Fact{ID: id, Dead: dead}
	if ev, err := events.Decode(orig, header, data); err == nil && ev.ID == id {
		f.Owner, f.Subject = ev.Owner, ev.Subject
		t := ev.Time.UTC()
		f.EventTime = &t
	}
	return f, true
}

// uploadID is the upload id of a pipeline event's subject, or "".
func uploadID(subject string) string {
	for _, prefix := range []string{events.RequestedSubject(""), events.BlobStoredSubject(""), events.CompletedSubject("")} {
		if id, ok := strings.CutPrefix(subject, prefix); ok && events.ValidID(id) {
			return id
		}
	}
	return ""
}

// upsert merges a fact into its row (see the package doc). $1 id, $2
// owner, $3 subject, $4 content type, $5 size, $6 sha256, $7 event time,
// $8 stored, $9 completed, $10 progress sequence, $11 reference, $12–$16
// the dead letter's sequence, original sequence, reason, step and time.
const upsert = `INSERT INTO ingest_upload_view AS v (id, owner, subject, content_type, size, sha256, event_time,
	stored_at, completed_at, progress_seq, ref, dead_seq, dead_orig_seq, dead_reason, dead_step, dead_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (id) DO UPDATE SET
	owner        = CASE WHEN v.owner = '' THEN excluded.owner ELSE v.owner END,
	subject      = CASE WHEN v.subject = '' THEN excluded.subject ELSE v.subject END,
	content_type = CASE WHEN v.content_type = '' THEN excluded.content_type ELSE v.content_type END,
	size         = CASE WHEN v.sha256 = '' THEN excluded.size ELSE v.size END,
	sha256       = CASE WHEN v.sha256 = '' THEN excluded.sha256 ELSE v.sha256 END,
	event_time   = coalesce(v.event_time, excluded.event_time),
	stored_at    = least(v.stored_at, excluded.stored_at),
	completed_at = least(v.completed_at, excluded.completed_at),
	ref          = CASE WHEN excluded.completed_at IS NOT NULL AND (v.completed_at IS NULL OR excluded.completed_at < v.completed_at)
	               THEN excluded.ref ELSE v.ref END,
	progress_seq = greatest(v.progress_seq, excluded.progress_seq),
	dead_seq       = CASE WHEN ` + newerDead + ` THEN excluded.dead_seq ELSE v.dead_seq END,
	dead_orig_seq  = CASE WHEN ` + newerDead + ` THEN excluded.dead_orig_seq ELSE v.dead_orig_seq END,
	dead_reason    = CASE WHEN ` + newerDead + ` THEN excluded.dead_reason ELSE v.dead_reason END,
	dead_step      = CASE WHEN ` + newerDead + ` THEN excluded.dead_step ELSE v.dead_step END,
	dead_at        = CASE WHEN ` + newerDead + ` THEN excluded.dead_at ELSE v.dead_at END`

// upsertCompleted is upsert for a completed event: in the same statement,
// the upload's record in ingest_uploads, if ingest has one, learns that the
// upload completed once the merged row says so. Its completed_at becomes
// the row's (written once per upload: a redelivery finds it equal), which
// takes it out of the completer's partial index. A record that another
// statement holds (a publish being recorded, a completer's claim) is
// skipped rather than waited for, so that the read model never waits on,
// or deadlocks with, ingest's request path; the completer's next round
// marks it (markCompleted in package uploads). Other facts cannot complete
// an upload and use upsert alone.
const upsertCompleted = `
WITH rm AS (` + upsert + `
	RETURNING v.id, v.completed_at, v.ref IS NOT NULL AS has_ref
), free AS (
	SELECT u.id, rm.completed_at FROM rm JOIN ingest_uploads u ON u.id = rm.id
	WHERE rm.completed_at IS NOT NULL AND rm.has_ref AND u.completed_at IS DISTINCT FROM rm.completed_at
	FOR UPDATE OF u SKIP LOCKED
)
UPDATE ingest_uploads u SET completed_at = free.completed_at
FROM free WHERE u.id = free.id`

// statement is the statement that applies f.
func (f Fact) statement() string {
	if f.CompletedAt != nil {
		return upsertCompleted
	}
	return upsert
}

// newerDead: the fact carries a later dead letter than the row.
const newerDead = `(excluded.dead_seq IS NOT NULL AND (v.dead_seq IS NULL OR excluded.dead_seq > v.dead_seq))`

// args are the upsert's arguments of f.
func (f Fact) args() ([]any, error) {
	var ref []byte
	if f.Ref != nil {
		var err error
		if ref, err = json.Marshal(f.Ref); err != nil {
			return nil, fmt.Errorf("readmodel: reference of %s: %w", f.ID, err)
		}
	}
	args := []any{f.ID, f.Owner, f.Subject, f.ContentType, f.Size, f.SHA256, f.EventTime,
		f.StoredAt, f.CompletedAt, seqArg(f.ProgressSeq), ref, nil, nil, nil, nil, nil}
	if d := f.Dead; d != nil {
		args[11], args[12], args[13], args[14], args[15] = int64(d.Seq), seqArg(d.OrigSeq), d.Reason, d.Step, d.At // #nosec G115 -- JetStream stream sequences, below 2^63
	}
	return args, nil
}

// seqArg is a stream sequence as an argument: NULL when unknown (0).
func seqArg(seq uint64) *int64 {
	if seq == 0 {
		return nil
	}
	n := int64(seq) // #nosec G115 -- a JetStream stream sequence, below 2^63
	return &n
}

// Execer runs a statement: a pool, a connection or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Apply merges f into the read model.
func Apply(ctx context.Context, db Execer, f Fact) error {
	args, err := f.args()
	if err != nil {
		return err
	}
	if _, err := db.Exec(ctx, f.statement(), args...); err != nil {
		return fmt.Errorf("readmodel: apply %s: %w", f.ID, err)
	}
	return nil
}
