// Package checker checks the invariants of blobref's design after a run,
// from the stores' own evidence rather than the services' word: the
// reference rows, markers and current-reference pointers in Postgres, an
// audit of every change to upload_refs and subject_refs kept by triggers
// the harness installs, the objects in the file:// bucket and how many times
// each landed (see blobwatch), and the completed events and dead letters in
// JetStream.
//
// Given the uploads a run had accepted and the poison events it sent on
// purpose, it reports per invariant: completed, dead-lettered (by reason,
// expected or not), lost (accepted but neither), side effects done more than
// once (blob writes, reference inserts), dangling references, digest
// mismatches and current-reference regressions.
package checker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/blobwatch"
	"github.com/blobref/blobref/pkg/events"
)

// Upload is one upload the run had accepted: ingest answered 2xx, or
// JetStream acknowledged its request event.
type Upload struct {
	ID      string
	Subject string
	SHA256  string
	Size    int64
	Time    time.Time // the event time the producer set; zero when ingest chose it
	Via     string    // "http" or "direct"
}

// Poison is an event the run sent on purpose to be refused: the dead letter
// it must end in.
type Poison struct {
	ID     string
	SHA256 string // the poison event's sha256, which differs from any accepted upload's of ID
	Reason string // the expected dead-letter reason
}

// AuditDDL creates the audit tables and the triggers that record every
// insert, update and delete on upload_refs, and every move of a subject's
// current reference in subject_refs (from which reference to which),
// committed with the change that fired them. Install it after the services
// migrated and before load starts.
const AuditDDL = `
CREATE TABLE IF NOT EXISTS torture_ref_audit (
    id    text        NOT NULL,
    op    text        NOT NULL,
    txid  bigint      NOT NULL DEFAULT txid_current(),
    at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION torture_ref_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO torture_ref_audit (id, op) VALUES (OLD.id, TG_OP);
    ELSE
        INSERT INTO torture_ref_audit (id, op) VALUES (NEW.id, TG_OP);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS torture_ref_audit ON upload_refs;
CREATE TRIGGER torture_ref_audit AFTER INSERT OR UPDATE OR DELETE ON upload_refs
    FOR EACH ROW EXECUTE FUNCTION torture_ref_audit();

CREATE TABLE IF NOT EXISTS torture_subject_audit (
    seq            bigserial   PRIMARY KEY,
    owner          text        NOT NULL,
    subject        text        NOT NULL,
    op             text        NOT NULL,
    old_upload_id  text,
    old_event_time timestamptz,
    new_upload_id  text,
    new_event_time timestamptz
);
CREATE OR REPLACE FUNCTION torture_subject_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO torture_subject_audit (owner, subject, op, new_upload_id, new_event_time)
        VALUES (NEW.owner, NEW.subject, TG_OP, NEW.upload_id, NEW.event_time);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO torture_subject_audit (owner, subject, op, old_upload_id, old_event_time, new_upload_id, new_event_time)
        VALUES (NEW.owner, NEW.subject, TG_OP, OLD.upload_id, OLD.event_time, NEW.upload_id, NEW.event_time);
    ELSE
        INSERT INTO torture_subject_audit (owner, subject, op, old_upload_id, old_event_time)
        VALUES (OLD.owner, OLD.subject, TG_OP, OLD.upload_id, OLD.event_time);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS torture_subject_audit ON subject_refs;
CREATE TRIGGER torture_subject_audit AFTER INSERT OR UPDATE OR DELETE ON subject_refs
    FOR EACH ROW EXECUTE FUNCTION torture_subject_audit();
`

// Input is what Check reads.
type Input struct {
	Accepted  []Upload
	Poison    []Poison
	DB        *pgxpool.Pool
	JS        jetstream.JetStream
	BucketDir string           // the bucket's root; objects are uploads/<id>
	Blob      blobwatch.Counts // object writes seen under uploads/
}

// DeadLetter is one dead letter as the checker classified it.
type DeadLetter struct {
	ID, Reason, Step, Subject, Error string
	Completed                        bool // the upload completed nonetheless (a republish or a redelivery died)
}

// Report is the outcome of a check. Every list should be empty.
type Report struct {
	Accepted, Completed int
	// DeadAccepted counts the accepted uploads that ended in the dead-letter
	// stream without completing, by reason: each is a finding, not a loss.
	DeadAccepted map[string]int
	// ExpectedDead counts the poison events dead-lettered with the expected
	// reason, by reason.
	ExpectedDead map[string]int
	// Unexpected lists every dead letter not explained by a poison event,
	// including those without a reason (Reason "", Error saying why).
	Unexpected []DeadLetter
	// PoisonNotDead lists poison events without their expected dead letter.
	PoisonNotDead []string

	Lost           []string // accepted, neither completed nor dead-lettered
	DupBlobWrites  []string // object landed more than once ("id×n")
	DupRefInserts  []string // reference row inserted more than once ("id×n")
	RefRewrites    []string // reference row updated or deleted
	ObjectsRemoved []string // object deleted or moved away
	Dangling       []string // reference row without its object, or with another object
	DigestMismatch []string // object or row whose sha256/size is not the upload's
	Regressions    []string // (owner, subject) pairs whose current reference is not their newest completed upload, or ever moved back or away
	Inconsistent   []string // other broken expectations (missing markers, wrong row fields, stray objects)
}

// Violations is the number of broken invariants: Lost, duplicated side
// effects, dangling references, digest mismatches, regressions, unexpected
// dead letters and the rest. Zero means the run passed.
func (r *Report) Violations() int {
	return len(r.Lost) + len(r.DupBlobWrites) + len(r.DupRefInserts) + len(r.RefRewrites) +
		len(r.ObjectsRemoved) + len(r.Dangling) + len(r.DigestMismatch) + len(r.Regressions) +
		len(r.Inconsistent) + len(r.Unexpected) + len(r.PoisonNotDead)
}

type refRow struct {
	subject, key, sha, ctype string
	size                     int64
	eventTime                time.Time
}

// Check reads the stores and reports.
func Check(ctx context.Context, in Input) (*Report, error) {
	r := &Report{Accepted: len(in.Accepted), DeadAccepted: map[string]int{}, ExpectedDead: map[string]int{}}
	accepted := make(map[string]Upload, len(in.Accepted))
	for _, u := range in.Accepted {
		accepted[u.ID] = u
	}

	refs, err := readRefs(ctx, in.DB)
	if err != nil {
		return nil, err
	}
	markers, err := readMarkers(ctx, in.DB)
	if err != nil {
		return nil, err
	}
	completed, err := completedIDs(ctx, in.JS)
	if err != nil {
		return nil, err
	}
	dead, err := deadLetters(ctx, in.JS)
	if err != nil {
		return nil, err
	}

	// Dead letters: the expected ones of poison, and the rest.
	poison := map[string]Poison{}
	for _, p := range in.Poison {
		poison[p.ID+"/"+p.SHA256] = p
	}
	poisonSeen := map[string]bool{}
	deadOf := map[string]string{} // accepted id -> reason of a dead letter of its own request
	for _, d := range dead {
		if p, ok := poison[d.ID+"/"+d.sha]; ok && p.Reason == d.Reason {
			r.ExpectedDead[d.Reason]++
			poisonSeen[d.ID+"/"+d.sha] = true
			continue
		}
		u, ok := accepted[d.ID]
		dl := DeadLetter{ID: d.ID, Reason: d.Reason, Step: d.Step, Subject: d.Subject, Error: d.Error, Completed: completed[d.ID]}
		if ok && u.SHA256 == d.sha && deadOf[d.ID] == "" {
			deadOf[d.ID] = d.Reason
		}
		r.Unexpected = append(r.Unexpected, dl)
	}
	for k, p := range poison {
		if !poisonSeen[k] {
			r.PoisonNotDead = append(r.PoisonNotDead, fmt.Sprintf("%s (want %s)", p.ID, p.Reason))
		}
	}

	// Evidence of side effects.
	for name, n := range in.Blob.Writes {
		if n > 1 {
			r.DupBlobWrites = append(r.DupBlobWrites, fmt.Sprintf("%s×%d", name, n))
		}
	}
	for name, n := range in.Blob.Deletes {
		r.ObjectsRemoved = append(r.ObjectsRemoved, fmt.Sprintf("%s×%d", name, n))
	}
	audit, err := readAudit(ctx, in.DB)
	if err != nil {
		return nil, err
	}
	for id, ops := range audit {
		if ops["INSERT"] > 1 {
			r.DupRefInserts = append(r.DupRefInserts, fmt.Sprintf("%s×%d", id, ops["INSERT"]))
		}
		if ops["UPDATE"]+ops["DELETE"] > 0 {
			r.RefRewrites = append(r.RefRewrites, fmt.Sprintf("%s: %d updates, %d deletes", id, ops["UPDATE"], ops["DELETE"]))
		}
	}

	// Objects: each is an accepted upload's, with its bytes.
	objects, err := readObjects(filepath.Join(in.BucketDir, "uploads"))
	if err != nil {
		return nil, err
	}
	for id, o := range objects {
		u, ok := accepted[id]
		switch {
		case !ok:
			r.Inconsistent = append(r.Inconsistent, "stray object uploads/"+id)
		case o.sha != u.SHA256: // the same SHA-256 is the same bytes, so the same size
			r.DigestMismatch = append(r.DigestMismatch, fmt.Sprintf("object uploads/%s: sha %s size %d, want %s size %d", id, o.sha, o.size, u.SHA256, u.Size))
		}
		if in.Blob.Writes[id] == 0 {
			r.Inconsistent = append(r.Inconsistent, "object uploads/"+id+" exists but no write of it was seen")
		}
	}

	// Reference rows: each points at its object and holds its upload.
	for id, row := range refs {
		o, ok := objects[id]
		switch {
		case row.key != events.DefaultKeyPrefix+id:
			r.Dangling = append(r.Dangling, fmt.Sprintf("%s: blob_key %s", id, row.key))
		case !ok:
			r.Dangling = append(r.Dangling, id+": no object")
		case o.sha != row.sha || o.size != row.size:
			r.Dangling = append(r.Dangling, fmt.Sprintf("%s: row sha %s size %d, object sha %s size %d", id, row.sha, row.size, o.sha, o.size))
		}
		u, ok := accepted[id]
		if !ok {
			r.Inconsistent = append(r.Inconsistent, "reference row of unaccepted id "+id)
			continue
		}
		if row.sha != u.SHA256 || row.size != u.Size {
			r.DigestMismatch = append(r.DigestMismatch, fmt.Sprintf("row %s: sha %s size %d, want %s size %d", id, row.sha, row.size, u.SHA256, u.Size))
		}
		if row.subject != u.Subject || (!u.Time.IsZero() && !row.eventTime.Equal(u.Time)) {
			r.Inconsistent = append(r.Inconsistent, fmt.Sprintf("row %s: subject %s time %v, want %s %v", id, row.subject, row.eventTime, u.Subject, u.Time))
		}
	}

	// Each accepted upload: completed, dead-lettered or lost.
	for _, u := range in.Accepted {
		_, hasRow := refs[u.ID]
		switch {
		case completed[u.ID]:
			r.Completed++
			if !hasRow {
				r.Inconsistent = append(r.Inconsistent, u.ID+": completed event without a reference row")
			}
			for _, step := range []string{events.StepBlob, events.StepRef} {
				if fp, ok := markers[u.ID+"/"+step]; !ok || fp != u.SHA256 {
					r.Inconsistent = append(r.Inconsistent, fmt.Sprintf("%s: completed, %s marker %q, want fingerprint %s", u.ID, step, fp, u.SHA256))
				}
			}
		case deadOf[u.ID] != "":
			r.DeadAccepted[deadOf[u.ID]]++
		default:
			r.Lost = append(r.Lost, fmt.Sprintf("%s (%s; row %v, object %v, blob marker %v)", u.ID, u.Via, hasRow, objects[u.ID] != nil, markers[u.ID+"/blob"] != ""))
		}
	}

	// The current reference of each subject is its newest completed upload,
	// ordered as refwriter orders them: (event_time, id) in Postgres; and it
	// never moved back on the way there.
	regs, err := regressions(ctx, in.DB)
	if err != nil {
		return nil, err
	}
	back, err := movesBack(ctx, in.DB)
	if err != nil {
		return nil, err
	}
	r.Regressions = append(regs, back...)

	for _, l := range [][]string{r.Lost, r.DupBlobWrites, r.DupRefInserts, r.RefRewrites, r.ObjectsRemoved, r.Dangling, r.DigestMismatch, r.Regressions, r.Inconsistent, r.PoisonNotDead} {
		sort.Strings(l)
	}
	return r, nil
}

func readRefs(ctx context.Context, db *pgxpool.Pool) (map[string]refRow, error) {
	rows, err := db.Query(ctx, `SELECT id, subject, blob_key, size, sha256, content_type, event_time FROM upload_refs`)
	if err != nil {
		return nil, fmt.Errorf("upload_refs: %w", err)
	}
	defer rows.Close()
	out := map[string]refRow{}
	for rows.Next() {
		var id string
		var row refRow
		if err := rows.Scan(&id, &row.subject, &row.key, &row.size, &row.sha, &row.ctype, &row.eventTime); err != nil {
			return nil, err
		}
		out[id] = row
	}
	return out, rows.Err()
}

func readMarkers(ctx context.Context, db *pgxpool.Pool) (map[string]string, error) {
	rows, err := db.Query(ctx, `SELECT upload_id, step, fingerprint FROM step_markers`)
	if err != nil {
		return nil, fmt.Errorf("step_markers: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, step, fp string
		if err := rows.Scan(&id, &step, &fp); err != nil {
			return nil, err
		}
		out[id+"/"+step] = fp
	}
	return out, rows.Err()
}

func readAudit(ctx context.Context, db *pgxpool.Pool) (map[string]map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT id, op, count(*) FROM torture_ref_audit GROUP BY id, op`)
	if err != nil {
		return nil, fmt.Errorf("torture_ref_audit: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]int{}
	for rows.Next() {
		var id, op string
		var n int
		if err := rows.Scan(&id, &op, &n); err != nil {
			return nil, err
		}
		if out[id] == nil {
			out[id] = map[string]int{}
		}
		out[id][op] = n
	}
	return out, rows.Err()
}

func regressions(ctx context.Context, db *pgxpool.Pool) ([]string, error) {
	// Current references are kept per owner and subject.
	rows, err := db.Query(ctx, `
		SELECT coalesce(s.subject, w.subject), coalesce(s.owner, w.owner), coalesce(s.upload_id, ''), coalesce(w.id, '')
		FROM subject_refs s
		FULL JOIN (SELECT DISTINCT ON (owner, subject) owner, subject, id FROM upload_refs
		           ORDER BY owner, subject, event_time DESC, id DESC) w ON w.owner = s.owner AND w.subject = s.subject
		WHERE s.upload_id IS DISTINCT FROM w.id`)
	if err != nil {
		return nil, fmt.Errorf("subject_refs: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var subject, owner, cur, newest string
		if err := rows.Scan(&subject, &owner, &cur, &newest); err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("%s of owner %q: current %q, newest completed %q", subject, owner, cur, newest))
	}
	return out, rows.Err()
}

// movesBack lists every change of an (owner, subject)'s current reference, as the
// audit trigger recorded it, that went back in (event_time, id) order or
// removed it: what a reader saw then, even if a later event moved it forward
// again. The comparison runs in Postgres, with refwriter's ordering.
func movesBack(ctx context.Context, db *pgxpool.Pool) ([]string, error) {
	rows, err := db.Query(ctx, `
		SELECT subject, owner, op, coalesce(old_upload_id, ''), coalesce(new_upload_id, '')
		FROM torture_subject_audit
		WHERE op = 'DELETE'
		   OR (op = 'UPDATE' AND (new_event_time, new_upload_id) < (old_event_time, old_upload_id))
		ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("torture_subject_audit: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var subject, owner, op, from, to string
		if err := rows.Scan(&subject, &owner, &op, &from, &to); err != nil {
			return nil, err
		}
		if op == "DELETE" {
			out = append(out, fmt.Sprintf("%s of owner %q: current %q removed", subject, owner, from))
		} else {
			out = append(out, fmt.Sprintf("%s of owner %q: current moved back from %q to %q", subject, owner, from, to))
		}
	}
	return out, rows.Err()
}

type object struct {
	sha  string
	size int64
}

func readObjects(dir string) (map[string]*object, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("bucket: %w", err)
	}
	out := map[string]*object{}
	for _, e := range entries {
		if e.IsDir() || !blobwatch.IsObject(e.Name()) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name())) // #nosec G304 -- an object of the run's own bucket directory
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		_ = f.Close()
		if err != nil {
			return nil, err
		}
		out[e.Name()] = &object{sha: hex.EncodeToString(h.Sum(nil)), size: n}
	}
	return out, nil
}

// completedIDs returns the ids with at least one event on
// uploads.completed.<id> in the UPLOADS stream. Repeats (from republishes)
// are expected and fine.
func completedIDs(ctx context.Context, js jetstream.JetStream) (map[string]bool, error) {
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.CompletedSubject(">")))
	if err != nil {
		return nil, fmt.Errorf("completed subjects: %w", err)
	}
	out := map[string]bool{}
	for subj, n := range info.State.Subjects {
		if n > 0 {
			out[strings.TrimPrefix(subj, events.CompletedSubject(""))] = true
		}
	}
	return out, nil
}

type deadLetter struct {
	events.DeadLetter
	ID, sha string
}

func deadLetters(ctx context.Context, js jetstream.JetStream) ([]deadLetter, error) {
	s, err := js.Stream(ctx, events.DLQStreamName)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []deadLetter
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dead letter %d: %w", seq, err)
		}
		// The id comes from the dead letter's own subject, dlq.<original
		// subject>, which every dead letter has, readable or not.
		id := raw.Subject[strings.LastIndexByte(raw.Subject, '.')+1:]
		d, err := events.ParseDeadLetter(raw.Header)
		if err != nil {
			// Not a dead letter "with a reason" (invariant 3): reported with
			// Reason "", and it explains no loss.
			d = events.DeadLetter{Subject: strings.TrimPrefix(raw.Subject, events.DeadLetterSubject("")), Error: err.Error()}
		}
		out = append(out, deadLetter{DeadLetter: d, ID: id, sha: raw.Header.Get("ce-sha256")})
	}
	return out, nil
}
