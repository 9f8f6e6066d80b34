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
	"slices"
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

// columns are the read model's columns a fact carries, with their types,
// in the order of args.
var columns = []struct{ name, typ string }{
	{"id", "text"}, {"owner", "text"}, {"subject", "text"}, {"content_type", "text"}, {"size", "bigint"},
	{"sha256", "text"}, {"event_time", "timestamptz"}, {"stored_at", "timestamptz"},
	{"completed_at", "timestamptz"}, {"progress_seq", "bigint"}, {"ref", "jsonb"}, {"dead_seq", "bigint"},
	{"dead_orig_seq", "bigint"}, {"dead_reason", "text"}, {"dead_step", "text"}, {"dead_at", "timestamptz"},
}

// merge is how a fact (excluded) merges into its row (v), column by column
// (see the package doc).
var merge = []struct{ col, expr string }{
	{"owner", "CASE WHEN v.owner = '' THEN excluded.owner ELSE v.owner END"},
	{"subject", "CASE WHEN v.subject = '' THEN excluded.subject ELSE v.subject END"},
	{"content_type", "CASE WHEN v.content_type = '' THEN excluded.content_type ELSE v.content_type END"},
	{"size", "CASE WHEN v.sha256 = '' THEN excluded.size ELSE v.size END"},
	{"sha256", "CASE WHEN v.sha256 = '' THEN excluded.sha256 ELSE v.sha256 END"},
	{"event_time", "coalesce(v.event_time, excluded.event_time)"},
	{"stored_at", "least(v.stored_at, excluded.stored_at)"},
	{"completed_at", "least(v.completed_at, excluded.completed_at)"},
	{"ref", "CASE WHEN excluded.completed_at IS NOT NULL AND (v.completed_at IS NULL OR excluded.completed_at < v.completed_at) THEN excluded.ref ELSE v.ref END"},
	{"progress_seq", "greatest(v.progress_seq, excluded.progress_seq)"},
	{"dead_seq", "CASE WHEN " + newerDead + " THEN excluded.dead_seq ELSE v.dead_seq END"},
	{"dead_orig_seq", "CASE WHEN " + newerDead + " THEN excluded.dead_orig_seq ELSE v.dead_orig_seq END"},
	{"dead_reason", "CASE WHEN " + newerDead + " THEN excluded.dead_reason ELSE v.dead_reason END"},
	{"dead_step", "CASE WHEN " + newerDead + " THEN excluded.dead_step ELSE v.dead_step END"},
	{"dead_at", "CASE WHEN " + newerDead + " THEN excluded.dead_at ELSE v.dead_at END"},
}

// newerDead: the fact carries a later dead letter than the row.
const newerDead = `(excluded.dead_seq IS NOT NULL AND (v.dead_seq IS NULL OR excluded.dead_seq > v.dead_seq))`

// upsertStatement merges a batch of facts, one array per column (args),
// each upload at most once, into their rows. A fact that changes nothing
// writes nothing: no new row version, no WAL (a redelivery, or a
// completion a GET or a retry told the read model first).
//
// With mark, the same statement also takes each upload off ingest's list of
// incomplete uploads (ingest_incomplete, which the completer's rounds read),
// if it is on it, once the merged row says the upload completed. A row of
// the list that another statement holds (another completion of the upload
// being recorded, a completer's round marking it) is skipped rather than
// waited for, so that two such statements never wait on, or deadlock with,
// each other; the completer's rounds take those off (markCompleted in
// package uploads), or a redelivery. Nothing here touches ingest's record,
// which the request path and the completer lock.
func upsertStatement(mark bool) string {
	var names, params, sel, set, olds, news []string
	for i, c := range columns {
		names = append(names, c.name)
		typ := c.typ
		if typ == "jsonb" {
			typ = "text" // sent as text, read as jsonb
		}
		params = append(params, fmt.Sprintf("$%d::%s[]", i+1, typ))
		sel = append(sel, "f."+c.name+"::"+c.typ)
	}
	for _, m := range merge {
		set = append(set, m.col+" = "+m.expr)
		olds, news = append(olds, "v."+m.col), append(news, m.expr)
	}
	sql := `WITH f AS (
	SELECT * FROM unnest(` + strings.Join(params, ", ") + `) AS f(` + strings.Join(names, ", ") + `)
), rm AS (
	INSERT INTO ingest_upload_view AS v (` + strings.Join(names, ", ") + `)
	SELECT ` + strings.Join(sel, ", ") + ` FROM f ORDER BY f.id
	ON CONFLICT (id) DO UPDATE SET ` + strings.Join(set, ",\n\t\t") + `
	WHERE (` + strings.Join(olds, ", ") + `) IS DISTINCT FROM (` + strings.Join(news, ", ") + `)
	RETURNING v.id, v.completed_at, v.ref IS NOT NULL AS has_ref
)`
	if !mark {
		return sql + `
SELECT count(*) FROM rm`
	}
	// done: the rows the statement wrote, and, as they were before it (the
	// statement's snapshot), those a completion left unchanged. The list is
	// looked up by an array of done's ids, never joined to done: the list
	// is small and churns, so its statistics (and the generic plan made
	// from them) can say it is empty when it is not, and a join planned on
	// that rescans done once per row of the list.
	return sql + `, done AS (
	SELECT id, completed_at, has_ref FROM rm
	UNION ALL
	SELECT v.id, v.completed_at, v.ref IS NOT NULL FROM f JOIN ingest_upload_view v ON v.id = f.id
	WHERE f.completed_at IS NOT NULL AND NOT EXISTS (SELECT FROM rm WHERE rm.id = f.id)
), free AS (
	SELECT i.id FROM ingest_incomplete i
	WHERE i.id = ANY (ARRAY(SELECT id FROM done WHERE completed_at IS NOT NULL AND has_ref))
	ORDER BY i.id
	FOR UPDATE OF i SKIP LOCKED
)
DELETE FROM ingest_incomplete i WHERE i.id = ANY (ARRAY(SELECT id FROM free))`
}

// upsert is the statement that applies a batch of facts with a completion
// among them; upsertNoCompletion one without: a blob_stored event or a dead
// letter never completes an upload, so it need not look at ingest's list of
// incomplete uploads (TestCompletionMarkCost).
var (
	upsert             = upsertStatement(true)
	upsertNoCompletion = upsertStatement(false)
)

// factArgs are upsert's arguments for facts, whose ids are distinct.
func factArgs(facts []Fact) ([]any, error) {
	n := len(facts)
	var (
		ids, owners, subjects, types, shas = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		sizes                              = make([]int64, n)
		eventTimes, stored, completed      = make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
		progress, deadSeqs, deadOrigSeqs   = make([]*int64, n), make([]*int64, n), make([]*int64, n)
		refs, deadReasons, deadSteps       = make([]*string, n), make([]*string, n), make([]*string, n)
		deadAts                            = make([]*time.Time, n)
	)
	for i, f := range facts {
		ids[i], owners[i], subjects[i], types[i], sizes[i], shas[i] = f.ID, f.Owner, f.Subject, f.ContentType, f.Size, f.SHA256
		eventTimes[i], stored[i], completed[i], progress[i] = f.EventTime, f.StoredAt, f.CompletedAt, seqArg(f.ProgressSeq)
		if f.Ref != nil {
			ref, err := json.Marshal(f.Ref)
			if err != nil {
				return nil, fmt.Errorf("readmodel: reference of %s: %w", f.ID, err)
			}
			s := string(ref)
			refs[i] = &s
		}
		if d := f.Dead; d != nil {
			deadSeqs[i], deadOrigSeqs[i] = seqArg(d.Seq), seqArg(d.OrigSeq)
			deadReasons[i], deadSteps[i], deadAts[i] = &d.Reason, &d.Step, &d.At
		}
	}
	return []any{ids, owners, subjects, types, sizes, shas, eventTimes, stored, completed, progress, refs,
		deadSeqs, deadOrigSeqs, deadReasons, deadSteps, deadAts}, nil
}

// seqArg is a stream sequence as an argument: NULL when unknown (0).
func seqArg(seq uint64) *int64 {
	if seq == 0 {
		return nil
	}
	n := int64(seq) // #nosec G115 -- a JetStream stream sequence, below 2^63
	return &n
}

// merged is f and then g merged into one fact, as applying f and then g
// merges them into a row (the merge list above, column by column): the
// first non-empty owner, subject, content type and event time, the size
// that came with the first digest, the earliest stored and completed
// times with the reference of the earliest completion, the latest
// progress, the dead letter with the highest sequence. Applying it writes
// the row once; TestFactsMergeInAnyOrder holds the two to the same result.
func merged(f, g Fact) Fact {
	first := func(a, b string) string {
		if a == "" {
			return b
		}
		return a
	}
	f.Owner, f.Subject, f.ContentType = first(f.Owner, g.Owner), first(f.Subject, g.Subject), first(f.ContentType, g.ContentType)
	if f.SHA256 == "" {
		f.Size, f.SHA256 = g.Size, g.SHA256
	}
	if f.EventTime == nil {
		f.EventTime = g.EventTime
	}
	f.StoredAt = earliest(f.StoredAt, g.StoredAt)
	if g.CompletedAt != nil && (f.CompletedAt == nil || g.CompletedAt.Before(*f.CompletedAt)) {
		f.CompletedAt, f.Ref = g.CompletedAt, g.Ref
	}
	f.ProgressSeq = max(f.ProgressSeq, g.ProgressSeq)
	if g.Dead != nil && g.Dead.Seq != 0 && (f.Dead == nil || f.Dead.Seq == 0 || g.Dead.Seq > f.Dead.Seq) {
		f.Dead = g.Dead
	}
	return f
}

func earliest(a, b *time.Time) *time.Time {
	if a == nil || (b != nil && b.Before(*a)) {
		return b
	}
	return a
}

// Execer runs a statement: a pool, a connection or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Apply merges facts into the read model in one statement: the facts of
// an upload merge into one first (see merged), as one statement cannot
// write a row twice. The merge does not depend on order or repetition, so
// a failure leaves nothing that applying the same facts again does not
// mend.
func Apply(ctx context.Context, db Execer, facts ...Fact) error {
	if len(facts) == 0 {
		return nil
	}
	byID := make(map[string]int, len(facts))
	one := make([]Fact, 0, len(facts))
	for _, f := range facts {
		if i, ok := byID[f.ID]; ok {
			one[i] = merged(one[i], f)
			continue
		}
		byID[f.ID] = len(one)
		one = append(one, f)
	}
	args, err := factArgs(one)
	if err != nil {
		return err
	}
	sql := upsertNoCompletion
	if slices.ContainsFunc(one, func(f Fact) bool { return f.CompletedAt != nil }) {
		sql = upsert
	}
	if _, err := db.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("readmodel: apply %d facts: %w", len(one), err)
	}
	return nil
}
