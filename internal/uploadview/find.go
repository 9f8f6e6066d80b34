package uploadview

import (
	"context"
	"fmt"
	"strings"

	"github.com/blobref/blobref/pkg/events"
)

// Get returns everything known of upload id: its state, steps, timeline,
// dead letters and its messages in both streams. ErrNotFound when nothing
// knows of it.
func (v *View) Get(ctx context.Context, id string) (Upload, error) {
	if !events.ValidID(id) {
		return Upload{}, fmt.Errorf("%w: %q is not an upload id (1 to 128 characters of [A-Za-z0-9_-])", ErrNotFound, id)
	}
	all, err := v.loadFacts(ctx, []string{id})
	if err != nil {
		return Upload{}, err
	}
	f := all[id]
	if err := v.readMessages(ctx, f); err != nil {
		return Upload{}, err
	}
	if !f.known() {
		return Upload{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return f.upload(), nil
}

// DefaultLimit is how many uploads Find returns unless told otherwise.
const DefaultLimit = 50

// findIDs finds the uploads whose id, Idempotency-Key or subject is $1, or
// whose subject matches the LIKE pattern $2 (when not empty), newest
// first.
const findIDs = `
SELECT id FROM (
	SELECT id, created_at AS t FROM ingest_uploads
	WHERE id = $1 OR idempotency_key = $1 OR subject = $1 OR ($2 <> '' AND subject LIKE $2)
	UNION ALL
	SELECT id, created_at FROM upload_refs
	WHERE id = $1 OR subject = $1 OR ($2 <> '' AND subject LIKE $2)
	UNION ALL
	SELECT upload_id, created_at FROM step_markers WHERE upload_id = $1
) found
GROUP BY id ORDER BY max(t) DESC, id LIMIT $3`

// Find returns the uploads whose id, subject or ingest Idempotency-Key is
// text, newest first, at most limit (DefaultLimit when 0). A text ending
// in "*" matches the subjects that start with the rest (users/42/*). An
// upload that only the streams know of (published over NATS, not yet
// stored) is found by its id. The uploads have no Events; their dead
// letters are the latest of each subject.
func (v *View) Find(ctx context.Context, text string, limit int) ([]Upload, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil
	}
	if limit <= 0 {
		limit = DefaultLimit
	}
	pattern := ""
	if prefix, ok := strings.CutSuffix(text, "*"); ok {
		pattern = likeEscaper.Replace(prefix) + "%"
	}
	rows, err := v.Pool.Query(ctx, findIDs, text, pattern, limit)
	if err != nil {
		return nil, pgError("find uploads", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, pgError("find uploads", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, pgError("find uploads", err)
	}
	if len(ids) == 0 && events.ValidID(text) {
		ids = []string{text} // kept below if the streams know it
	}
	return v.summaries(ctx, ids)
}

// likeEscaper escapes the characters LIKE gives a meaning to.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// summaries returns the uploads ids that anything knows of, in the order
// of ids, from Postgres and the latest messages of their subjects.
func (v *View) summaries(ctx context.Context, ids []string) ([]Upload, error) {
	if len(ids) == 0 {
		return []Upload{}, nil
	}
	all, err := v.loadFacts(ctx, ids)
	if err != nil {
		return nil, err
	}
	st, err := v.streams(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Upload, 0, len(ids))
	for _, id := range ids {
		f := all[id]
		if err := st.readLatest(ctx, f); err != nil {
			return nil, err
		}
		if f.known() {
			out = append(out, f.upload())
		}
	}
	return out, nil
}
