package checker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/torture/internal/blobwatch"
	"github.com/blobref/blobref/tools/torture/internal/checker"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestCheckFindsEveryViolation builds stores that break each invariant once
// and checks the report names each, and nothing else.
func TestCheckFindsEveryViolation(t *testing.T) {
	ctx := context.Background()
	pg := testenv.StartPostgres(t)
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	if _, err := pg.Pool.Exec(ctx, checker.AuditDDL); err != nil {
		t.Fatal(err)
	}
	bucket := t.TempDir()
	if err := os.MkdirAll(filepath.Join(bucket, "uploads"), 0o755); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(id, subject string, at time.Duration) checker.Upload {
		data := []byte("bytes of " + id)
		return checker.Upload{ID: id, Subject: subject, SHA256: sum(data), Size: int64(len(data)), Time: t0.Add(at), Via: "direct"}
	}
	ok1 := mk("ok1", "s/a", 0)       // completed, once
	newer := mk("newer", "s/a", 1e9) // completed, written twice, and the pointer stays on ok1: a regression
	lost := mk("lost", "s/b", 0)     // nothing anywhere
	dup := mk("dup", "s/b", 1e9)     // reference inserted twice
	dangling := mk("dangling", "s/c", 0)
	dead := mk("dead", "s/d", 0) // dead-lettered without completing
	accepted := []checker.Upload{ok1, newer, lost, dup, dangling, dead}

	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pg.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	object := func(u checker.Upload) {
		if err := os.WriteFile(filepath.Join(bucket, "uploads", u.ID), []byte("bytes of "+u.ID), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	row := func(u checker.Upload) {
		exec(`INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time) VALUES ($1,$2,$3,$4,$5,'application/octet-stream',$6)`,
			u.ID, u.Subject, "uploads/"+u.ID, u.Size, u.SHA256, u.Time)
		for _, step := range []string{"blob", "ref"} {
			exec(`INSERT INTO step_markers (upload_id, step, fingerprint, result) VALUES ($1,$2,$3,'{}') ON CONFLICT DO NOTHING`, u.ID, step, u.SHA256)
		}
	}
	completed := func(u checker.Upload) {
		msg := nats.NewMsg(events.CompletedSubject(u.ID))
		msg.Data = []byte("{}")
		testenv.PublishMsg(t, js, msg)
	}
	for _, u := range []checker.Upload{ok1, newer, dup, dangling} {
		if u != dangling {
			object(u)
		}
		row(u)
		completed(u)
	}
	exec(`DELETE FROM subject_refs WHERE true`) // refwriter's pointer is not written by row()
	exec(`DELETE FROM upload_refs WHERE id = 'dup'`)
	row(dup)
	exec(`INSERT INTO subject_refs (subject, upload_id, event_time) VALUES ('s/a','ok1',$1), ('s/b','dup',$2), ('s/c','dangling',$3)`, ok1.Time, dup.Time, dangling.Time)

	deadLetter := func(id, sha, reason string) {
		h := nats.Header{}
		h.Set("ce-sha256", sha)
		d := events.DeadLetter{Reason: reason, Step: "blob", Subject: events.RequestedSubject(id), Stream: events.StreamName, Sequence: 1, Deliveries: 1}
		testenv.PublishMsg(t, js, events.DeadLetterMsg(d, h, nil, "dl-"+id+reason))
	}
	deadLetter(dead.ID, dead.SHA256, events.ReasonRetriesExhausted)
	deadLetter(ok1.ID, "poisonsha", events.ReasonConflict)
	poison := []checker.Poison{
		{ID: ok1.ID, SHA256: "poisonsha", Reason: events.ReasonConflict},
		{ID: "never", SHA256: "x", Reason: events.ReasonDigestMismatch},
	}

	rep, err := checker.Check(ctx, checker.Input{
		Accepted: accepted, Poison: poison, DB: pg.Pool, JS: js, BucketDir: bucket,
		Blob: blobwatch.Counts{Writes: map[string]int{"ok1": 1, "newer": 2, "dup": 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 4 {
		t.Errorf("completed: got %d, want 4", rep.Completed)
	}
	check := func(name string, got []string, want ...string) {
		t.Helper()
		var ids []string
		for _, g := range got {
			ids = append(ids, strings.FieldsFunc(g, func(r rune) bool { return r == ' ' || r == ':' || r == '×' })[0])
		}
		slices.Sort(ids)
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Errorf("%s: got %q, want ids %q", name, got, want)
		}
	}
	check("lost", rep.Lost, "lost")
	check("duplicated blob writes", rep.DupBlobWrites, "newer")
	check("duplicated ref inserts", rep.DupRefInserts, "dup")
	check("ref rewrites", rep.RefRewrites, "dup")
	check("dangling", rep.Dangling, "dangling")
	check("regressions", rep.Regressions, "s/a")
	check("digest mismatches", rep.DigestMismatch)
	check("poison not dead-lettered", rep.PoisonNotDead, "never")
	if rep.DeadAccepted[events.ReasonRetriesExhausted] != 1 || len(rep.DeadAccepted) != 1 {
		t.Errorf("accepted dead-lettered: got %v, want retries_exhausted 1", rep.DeadAccepted)
	}
	if rep.ExpectedDead[events.ReasonConflict] != 1 || len(rep.ExpectedDead) != 1 {
		t.Errorf("expected dead letters: got %v, want conflict 1", rep.ExpectedDead)
	}
	if len(rep.Unexpected) != 1 || rep.Unexpected[0].ID != "dead" {
		t.Errorf("unexpected dead letters: got %+v, want the one of dead", rep.Unexpected)
	}
	// dup's and newer's objects exist with writes seen; ok1 too. "dangling"
	// has no object (a dangling row, not an inconsistency).
	if len(rep.Inconsistent) != 0 {
		t.Errorf("inconsistent: got %q, want none", rep.Inconsistent)
	}
}
