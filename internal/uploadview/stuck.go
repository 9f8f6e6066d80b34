package uploadview

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// The kinds of stuck uploads, in the order an upload goes through them.
const (
	// StuckUnpublished: ingest recorded the upload and JetStream never
	// acknowledged its request (ingest_uploads.published_at IS NULL).
	StuckUnpublished = "unpublished"
	// StuckNotStored: the request is published and no blob is stored.
	StuckNotStored = "not_stored"
	// StuckNotReferenced: the blob is stored and no reference recorded.
	StuckNotReferenced = "not_referenced"
	// StuckDeadLetter: a step dead-lettered one of the upload's events and
	// nothing was published for it since.
	StuckDeadLetter = "dead_letter"
)

// Stuck is an upload that has not completed, and why.
type Stuck struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Why says what is pending, in a sentence.
	Why string `json:"why"`
	// Since is when it got where it is: recorded, published, stored or
	// dead-lettered. Age is how long ago that was.
	Since      time.Time     `json:"since"`
	Age        time.Duration `json:"-"`
	AgeSeconds float64       `json:"ageSeconds"`
	// Subject and Owner are known for uploads ingest recorded.
	Subject string `json:"subject,omitempty"`
	Owner   string `json:"owner,omitempty"`
	// DeadLetter is the dead letter of a StuckDeadLetter.
	DeadLetter *Letter `json:"deadLetter,omitempty"`
}

// StuckQuery says which stuck uploads to list.
type StuckQuery struct {
	// OlderThan lists only uploads stuck for at least this long.
	OlderThan time.Duration
	// Limit is the most uploads listed; 0 means DefaultLimit.
	Limit int
}

const (
	selectUnpublished = `
SELECT u.id, u.subject, u.caller, u.created_at FROM ingest_uploads u
WHERE u.published_at IS NULL AND u.created_at <= $1
	AND NOT EXISTS (SELECT 1 FROM step_markers m WHERE m.upload_id = u.id)
	AND NOT (u.id = ANY($2::text[]))
ORDER BY u.created_at, u.id LIMIT $3`
	selectNotStored = `
SELECT u.id, u.subject, u.caller, u.published_at FROM ingest_uploads u
WHERE u.published_at <= $1
	AND NOT EXISTS (SELECT 1 FROM step_markers m WHERE m.upload_id = u.id AND m.step = '` + events.StepBlob + `')
	AND NOT (u.id = ANY($2::text[]))
ORDER BY u.published_at, u.id LIMIT $3`
	selectNotReferenced = `
SELECT b.upload_id, coalesce(u.subject, ''), coalesce(u.caller, ''), b.created_at FROM step_markers b
LEFT JOIN ingest_uploads u ON u.id = b.upload_id
WHERE b.step = '` + events.StepBlob + `' AND b.created_at <= $1
	AND NOT EXISTS (SELECT 1 FROM step_markers r WHERE r.upload_id = b.upload_id AND r.step = '` + events.StepRef + `')
	AND NOT (b.upload_id = ANY($2::text[]))
ORDER BY b.created_at, b.upload_id LIMIT $3`
	// selectDeadUploads says of each of the ids whether it completed, and
	// its subject and caller when ingest recorded it.
	selectDeadUploads = `
SELECT k.id, r.upload_id IS NOT NULL, coalesce(u.subject, ''), coalesce(u.caller, '')
FROM unnest($1::text[]) AS k(id)
LEFT JOIN step_markers r ON r.upload_id = k.id AND r.step = '` + events.StepRef + `'
LEFT JOIN ingest_uploads u ON u.id = k.id`
)

// Stuck lists the uploads that have not completed, oldest first: those
// ingest recorded and JetStream never acknowledged, those published with no
// blob stored, those stored with no reference, and those dead-lettered, each
// for at least q.OlderThan. more says that there are more than q.Limit.
//
// Postgres knows of an upload that a producer other than ingest published
// once blobwriter stored it: until then only the blobwriter consumer's lag
// (Consumers) counts it, or its dead letter.
func (v *View) Stuck(ctx context.Context, q StuckQuery) (list []Stuck, more bool, err error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	var now time.Time
	if err := v.Pool.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return nil, false, pgError("stuck", err)
	}
	now = now.UTC()
	cutoff := now.Add(-q.OlderThan)

	dead, err := v.deadUploads(ctx)
	if err != nil {
		return nil, false, err
	}
	deadIDs := make([]string, 0, len(dead))
	for _, s := range dead {
		deadIDs = append(deadIDs, s.ID)
		if !s.Since.After(cutoff) {
			list = append(list, s)
		}
	}
	for _, k := range []struct {
		kind, query string
		why         func(subject string) string
	}{
		{StuckUnpublished, selectUnpublished, func(string) string {
			return "ingest recorded it; JetStream never acknowledged its request (a crash or an outage between the two)"
		}},
		{StuckNotStored, selectNotStored, func(string) string {
			return "its request is in " + events.StreamName + "; blobwriter has stored no blob (see the blobwriter consumer's lag)"
		}},
		{StuckNotReferenced, selectNotReferenced, func(string) string {
			return "its blob is stored; refwriter has recorded no reference (see the refwriter consumer's lag)"
		}},
	} {
		rows, err := v.Pool.Query(ctx, k.query, cutoff, deadIDs, limit+1)
		if err != nil {
			return nil, false, pgError("stuck: "+k.kind, err)
		}
		for rows.Next() {
			s := Stuck{Kind: k.kind}
			if err := rows.Scan(&s.ID, &s.Subject, &s.Owner, &s.Since); err != nil {
				rows.Close()
				return nil, false, pgError("stuck: "+k.kind, err)
			}
			s.Since, s.Why = s.Since.UTC(), k.why(s.Subject)
			list = append(list, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, false, pgError("stuck: "+k.kind, err)
		}
	}
	slices.SortStableFunc(list, func(a, b Stuck) int { return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.ID, b.ID)) })
	for i := range list {
		list[i].Age = max(now.Sub(list[i].Since), 0)
		list[i].AgeSeconds = list[i].Age.Seconds()
	}
	if len(list) > limit {
		return list[:limit], true, nil
	}
	return list, false, nil
}

// deadUploads returns, for each upload with a dead letter in UPLOADS_DLQ
// that has not completed and had nothing published on the dead letter's
// subject since, its latest such dead letter.
func (v *View) deadUploads(ctx context.Context) ([]Stuck, error) {
	latest := map[string]Letter{}
	err := DeadLetters(ctx, v.JS, DeadLetterFilter{}, func(l Letter) error {
		id := l.UploadID()
		if l.Err != nil || id == "" {
			return nil // not one the pipeline wrote: blobrefctl dlq list shows it
		}
		if prev, ok := latest[id]; !ok || l.At().After(prev.At()) {
			latest[id] = l
		}
		return nil
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) || len(latest) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stuck: dead letters: %w", err)
	}
	ids := make([]string, 0, len(latest))
	for id := range latest {
		ids = append(ids, id)
	}
	rows, err := v.Pool.Query(ctx, selectDeadUploads, ids)
	if err != nil {
		return nil, pgError("stuck: dead letters", err)
	}
	type known struct{ subject, owner string }
	recorded := map[string]known{}
	for rows.Next() {
		var id string
		var completed bool
		var k known
		if err := rows.Scan(&id, &completed, &k.subject, &k.owner); err != nil {
			rows.Close()
			return nil, pgError("stuck: dead letters", err)
		}
		if completed {
			delete(latest, id)
		}
		recorded[id] = k
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, pgError("stuck: dead letters", err)
	}
	uploads, err := v.JS.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("stuck: stream %s: %w", events.StreamName, err)
	}
	out := make([]Stuck, 0, len(latest))
	for id, l := range latest {
		raw, err := uploads.GetLastMsgForSubject(ctx, l.Subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return nil, fmt.Errorf("stuck: last message of %s: %w", l.Subject, err)
		case raw.Time.After(l.At()):
			continue // published again since (a retry or a replay): not dead
		}
		why := fmt.Sprintf("step %s dead-lettered %s: %s", l.Step, l.Subject, l.Reason)
		if l.Error != "" {
			why += ": " + l.Error
		}
		k := recorded[id]
		out = append(out, Stuck{ID: id, Kind: StuckDeadLetter, Why: why, Since: l.At(), Subject: k.subject, Owner: k.owner, DeadLetter: &l})
	}
	return out, nil
}
