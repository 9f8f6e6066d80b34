package uploads

import (
	"encoding/json"
	"time"

	"github.com/blobref/blobref/pkg/events"
)

// view is what ingest's read model (ingest_upload_view, package readmodel)
// says of an upload; every field may be missing.
type view struct {
	storedAt, completedAt *time.Time
	ref                   *events.Reference
	// progressSeq is the highest UPLOADS sequence of its blob_stored and
	// completed events; deadOrigSeq that of the message its latest dead
	// letter dead-lettered.
	progressSeq, deadOrigSeq *int64
	dead                     *DeadLetter
}

func (v *view) completed() bool { return v.completedAt != nil && v.ref != nil }

// viewColumns are the columns of the read model v that viewScan reads.
const viewColumns = `rm.stored_at, rm.completed_at, rm.progress_seq, rm.ref,
	rm.dead_orig_seq, rm.dead_reason, rm.dead_step, rm.dead_at`

// viewScan receives the viewColumns of a row.
type viewScan struct {
	storedAt, completedAt, deadAt *time.Time
	progressSeq, deadOrigSeq      *int64
	ref                           []byte
	deadReason, deadStep          *string
}

func (c *viewScan) targets() []any {
	return []any{&c.storedAt, &c.completedAt, &c.progressSeq, &c.ref,
		&c.deadOrigSeq, &c.deadReason, &c.deadStep, &c.deadAt}
}

func (c *viewScan) view(id string) view {
	v := view{storedAt: utc(c.storedAt), completedAt: utc(c.completedAt),
		progressSeq: copyInt(c.progressSeq), deadOrigSeq: copyInt(c.deadOrigSeq)}
	if c.ref != nil {
		var ref events.Reference
		if json.Unmarshal(c.ref, &ref) == nil {
			ref.ID = id
			v.ref = &ref
		}
	}
	if c.deadReason != nil {
		v.dead = &DeadLetter{Reason: *c.deadReason, Step: deref(c.deadStep), Message: deadLetterMessage(*c.deadReason)}
		if c.deadAt != nil {
			v.dead.At = c.deadAt.UTC()
		}
	}
	return v
}

// copyInt returns a copy of *n (the scan's targets are reused), or nil.
func copyInt(n *int64) *int64 {
	if n == nil {
		return nil
	}
	m := *n
	return &m
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// fold sets the state of st from what the read model says of its upload,
// whose request ingest last published at UPLOADS sequence publishedSeq, if
// it did. Completed wins; then failed, for a dead letter that neither a
// later publish of the request nor a later event of the pipeline (a
// re-drive) overtook; then stored once the bytes are stored; pending
// otherwise. "Later" is by UPLOADS sequence, one order whatever the clocks;
// a dead letter without one is overtaken by nothing but the completion.
// stateSQL is the same rule in SQL.
func (v view) fold(st *State, publishedSeq *int64) {
	st.State = StatePending
	if v.storedAt != nil {
		st.Steps.Blob = &Step{At: *v.storedAt}
		st.State = StateStored
	}
	if v.completed() {
		if st.Steps.Blob == nil { // its completed event came first
			st.Steps.Blob = &Step{At: *v.completedAt}
		}
		st.Steps.Ref = &Step{At: *v.completedAt}
		st.State, st.Reference = StateCompleted, v.ref
		return
	}
	if v.dead == nil {
		return
	}
	if v.deadOrigSeq != nil && (after(publishedSeq, *v.deadOrigSeq) || after(v.progressSeq, *v.deadOrigSeq)) {
		return
	}
	st.State, st.DeadLetter = StateFailed, v.dead
}

// after reports whether seq is known and later than than.
func after(seq *int64, than int64) bool { return seq != nil && *seq > than }

// stateSQL is fold's state in SQL, over the read model rm, with the request
// last published at UPLOADS sequence publishedSeq (an SQL expression).
func stateSQL(publishedSeq string) string {
	return `CASE
	WHEN rm.completed_at IS NOT NULL AND rm.ref IS NOT NULL THEN '` + StateCompleted + `'
	WHEN rm.dead_reason IS NOT NULL
	     AND NOT coalesce(` + publishedSeq + ` > rm.dead_orig_seq, false)
	     AND NOT coalesce(rm.progress_seq > rm.dead_orig_seq, false) THEN '` + StateFailed + `'
	WHEN rm.stored_at IS NOT NULL THEN '` + StateStored + `'
	ELSE '` + StatePending + `' END`
}
