package checker_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/torture/internal/checker"
)

// baselineCompleted is how many uploads baseline completes.
const baselineCompleted = 5

// baseline fills w with what a clean run leaves: five uploads completed on
// three subjects (two of them at the same event time, completed newest id
// first, so the tie-break keeps the pointer), one accepted over HTTP without
// a producer's time, one completed event republished, and two poison events
// in the dead-letter stream with the reasons they were sent for.
func baseline(w *world) {
	w.t.Helper()
	b1 := upload("b1", "s/b", 0)
	b1.Time, b1.Via = time.Time{}, "http"
	for _, u := range []checker.Upload{upload("a1", "s/a", 0), upload("a2", "s/a", time.Second), b1, upload("t2", "s/t", 0), upload("t1", "s/t", 0)} {
		w.complete(u)
	}
	w.publishCompleted(upload("a2", "s/a", time.Second))

	conflict := w.request("a1", "s/a", other("a1"))
	w.deadLetter(conflict, events.ReasonConflict)
	w.poison = append(w.poison, checker.Poison{ID: "a1", SHA256: conflict.SHA256, Reason: events.ReasonConflict})
	claimed, err := events.NewRequested(events.Request{ID: "pd", Source: "/checker-test", Subject: "s/p", ContentType: contentType,
		Time: t0, DataRef: events.ObjectRef("claims", "pd"), SHA256: sum([]byte("what the claim should hold"))})
	if err != nil {
		w.t.Fatal(err)
	}
	w.deadLetter(claimed, events.ReasonDigestMismatch)
	w.poison = append(w.poison, checker.Poison{ID: "pd", SHA256: claimed.SHA256, Reason: events.ReasonDigestMismatch})
}

// The lists of a report, by name.
const (
	lost          = "lost"
	dupBlobWrites = "duplicated blob writes"
	dupRefInserts = "duplicated ref inserts"
	refRewrites   = "ref rewrites"
	removed       = "objects removed"
	dangling      = "dangling"
	digest        = "digest mismatches"
	regressions   = "regressions"
	inconsistent  = "inconsistent"
	poisonNotDead = "poison not dead-lettered"
	unexpected    = "unexpected dead letters"
)

func findings(r *checker.Report) map[string][]string {
	m := map[string][]string{
		lost: r.Lost, dupBlobWrites: r.DupBlobWrites, dupRefInserts: r.DupRefInserts, refRewrites: r.RefRewrites,
		removed: r.ObjectsRemoved, dangling: r.Dangling, digest: r.DigestMismatch, regressions: r.Regressions,
		inconsistent: r.Inconsistent, poisonNotDead: r.PoisonNotDead, unexpected: nil,
	}
	for _, d := range r.Unexpected {
		m[unexpected] = append(m[unexpected], fmt.Sprintf("%s reason=%q completed=%v: %s", d.ID, d.Reason, d.Completed, d.Error))
	}
	return m
}

// matches reports whether each of want is part of its own entry of got,
// and got has no other entries.
func matches(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	used := make([]bool, len(got))
next:
	for _, w := range want {
		for i, g := range got {
			if !used[i] && strings.Contains(g, w) {
				used[i] = true
				continue next
			}
		}
		return false
	}
	return true
}

// violationCase is one violation injected into the stores of a clean run.
type violationCase struct {
	name   string
	before func(w *world) // what was in the bucket before the run's watch began
	inject func(w *world)
	// want holds, per list of the report, a part of each entry it must
	// have; every other list must be empty.
	want map[string][]string
	// completed counts the uploads the injection completed, beyond the
	// baseline's; deadAccepted the accepted uploads dead-lettered, by reason.
	completed    int
	deadAccepted map[string]int
}

// TestCheckReportsEachViolation injects each violation the checker looks
// for, one at a time, through every branch of its checks, into the real
// stores of a clean run, and checks the report names exactly it. The clean
// run itself reports nothing.
func TestCheckReportsEachViolation(t *testing.T) {
	c1 := upload("c1", "s/c", 0)
	for _, tc := range violationCases(c1) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, tc.before)
			baseline(w)
			if tc.inject != nil {
				tc.inject(w)
			}
			rep := w.check()

			got := findings(rep)
			for name := range tc.want {
				if _, ok := got[name]; !ok {
					t.Fatalf("the case wants entries in %q, which is no list of the report", name)
				}
			}
			total := 0
			for _, name := range slices.Sorted(maps.Keys(got)) {
				total += len(tc.want[name])
				if !matches(got[name], tc.want[name]) {
					t.Errorf("%s: got %q, want one entry containing each of %q", name, got[name], tc.want[name])
				}
			}
			if v := rep.Violations(); v != total {
				t.Errorf("violations: got %d, want %d", v, total)
			}
			if want := baselineCompleted + tc.completed; rep.Completed != want {
				t.Errorf("completed: got %d, want %d", rep.Completed, want)
			}
			if rep.Accepted != len(w.accepted) {
				t.Errorf("accepted: got %d, want %d", rep.Accepted, len(w.accepted))
			}
			if !maps.Equal(rep.DeadAccepted, tc.deadAccepted) {
				t.Errorf("accepted dead-lettered: got %v, want %v", rep.DeadAccepted, tc.deadAccepted)
			}
			wantExpected := map[string]int{events.ReasonConflict: 1, events.ReasonDigestMismatch: 1}
			if !maps.Equal(rep.ExpectedDead, wantExpected) {
				t.Errorf("expected dead letters: got %v, want %v", rep.ExpectedDead, wantExpected)
			}
		})
	}
}

// violationCases are the cases of TestCheckReportsEachViolation; c1 is an
// upload the baseline does not have.
func violationCases(c1 checker.Upload) []violationCase {
	a1, a2 := upload("a1", "s/a", 0), upload("a2", "s/a", time.Second)
	a3 := upload("a3", "s/a", 2*time.Second)
	return []violationCase{
		{name: "clean run"},

		// Invariant 3: nothing lost; every dead letter has a reason.
		{
			name:   "lost: accepted, nothing anywhere",
			inject: func(w *world) { w.accept(c1) },
			want:   map[string][]string{lost: {"c1 (direct; row false, object false, blob marker false)"}},
		},
		{
			name:   "lost: stopped after the blob step",
			inject: func(w *world) { w.accept(c1); w.storeBlob(c1) },
			want:   map[string][]string{lost: {"c1 (direct; row false, object true, blob marker true)"}},
		},
		{
			name: "lost: reference recorded, no completed event",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				w.storeRef(rowOf(c1), c1.SHA256, true)
			},
			want: map[string][]string{lost: {"c1 (direct; row true, object true, blob marker true)"}},
		},
		{
			name: "accepted upload dead-lettered",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				w.deadLetter(w.request(c1.ID, c1.Subject, content(c1.ID)), events.ReasonRetriesExhausted)
			},
			want:         map[string][]string{unexpected: {`c1 reason="retries_exhausted" completed=false`}},
			deadAccepted: map[string]int{events.ReasonRetriesExhausted: 1},
		},
		{
			name: "dead letter without a reason explains no loss",
			inject: func(w *world) {
				w.accept(c1)
				w.deadLetter(w.request(c1.ID, c1.Subject, content(c1.ID)), "")
			},
			want: map[string][]string{
				unexpected: {`c1 reason="" completed=false: events: dead letter: missing Blobref-Dead-Reason`},
				lost:       {"c1 (direct;"},
			},
		},
		{
			name: "dead letter of another request under the same id explains no loss",
			inject: func(w *world) {
				w.accept(c1)
				w.deadLetter(w.request(c1.ID, c1.Subject, other(c1.ID)), events.ReasonConflict)
			},
			want: map[string][]string{
				unexpected: {`c1 reason="conflict" completed=false`},
				lost:       {"c1 (direct;"},
			},
		},
		{
			name: "dead letter of a completed upload",
			inject: func(w *world) {
				w.deadLetter(w.request(a2.ID, a2.Subject, content(a2.ID)), events.ReasonRetriesExhausted)
			},
			want: map[string][]string{unexpected: {`a2 reason="retries_exhausted" completed=true`}},
		},
		{
			name: "dead letter of an event nobody sent",
			inject: func(w *world) {
				w.deadLetter(w.request("zz", "s/z", content("zz")), events.ReasonMalformed)
			},
			want: map[string][]string{unexpected: {`zz reason="malformed" completed=false`}},
		},
		{
			name: "poison not dead-lettered",
			inject: func(w *world) {
				w.poison = append(w.poison, checker.Poison{ID: "pn", SHA256: sum(content("pn")), Reason: events.ReasonInvalid})
			},
			want: map[string][]string{poisonNotDead: {"pn (want invalid)"}},
		},
		{
			name: "poison dead-lettered for another reason",
			inject: func(w *world) {
				ev := w.request("pr", "s/r", content("pr"))
				w.poison = append(w.poison, checker.Poison{ID: "pr", SHA256: ev.SHA256, Reason: events.ReasonConflict})
				w.deadLetter(ev, events.ReasonInvalid)
			},
			want: map[string][]string{
				poisonNotDead: {"pr (want conflict)"},
				unexpected:    {`pr reason="invalid" completed=false`},
			},
		},

		// Invariant 1: one object, one reference row per key, each written once.
		{
			name:   "object written twice",
			inject: func(w *world) { w.putObject(a1.ID, content(a1.ID), false) },
			want:   map[string][]string{dupBlobWrites: {"a1×2"}},
		},
		{
			name:   "object removed after its reference",
			inject: func(w *world) { w.deleteObject(a1.ID) },
			want: map[string][]string{
				removed:  {"a1×1"},
				dangling: {"a1: no object"},
			},
		},
		{
			name: "object removed and written again",
			inject: func(w *world) {
				w.deleteObject(a1.ID)
				w.putObject(a1.ID, content(a1.ID), true)
			},
			want: map[string][]string{
				removed:       {"a1×1"},
				dupBlobWrites: {"a1×2"},
			},
		},
		{
			name:   "stray object",
			inject: func(w *world) { w.putObject("stray", content("stray"), true) },
			want:   map[string][]string{inconsistent: {"stray object uploads/stray"}},
		},
		{
			name:   "object whose write nobody saw",
			before: func(w *world) { w.putObject(c1.ID, content(c1.ID), true) },
			inject: func(w *world) {
				w.accept(c1)
				w.marker(c1.ID, "blob", c1.SHA256)
				w.storeRef(rowOf(c1), c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want:      map[string][]string{inconsistent: {"object uploads/c1 exists but no write of it was seen"}},
			completed: 1,
		},
		{
			name: "reference inserted twice",
			inject: func(w *world) {
				w.exec(`DELETE FROM upload_refs WHERE id = 'a1'`)
				w.exec(`INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time)
					VALUES ($1, $2, $3, $4, $5, $6, $7)`, a1.ID, a1.Subject, "uploads/a1", a1.Size, a1.SHA256, contentType, a1.Time)
			},
			want: map[string][]string{
				dupRefInserts: {"a1×2"},
				refRewrites:   {"a1: 0 updates, 1 deletes"},
			},
		},
		{
			name:   "reference updated",
			inject: func(w *world) { w.exec(`UPDATE upload_refs SET content_type = 'text/plain' WHERE id = 'a1'`) },
			want:   map[string][]string{refRewrites: {"a1: 1 updates, 0 deletes"}},
		},
		{
			name:   "reference deleted",
			inject: func(w *world) { w.exec(`DELETE FROM upload_refs WHERE id = 'a1'`) },
			want: map[string][]string{
				refRewrites:  {"a1: 0 updates, 1 deletes"},
				inconsistent: {"a1: completed event without a reference row"},
			},
		},

		// Invariant 2: no dangling reference; and every digest is the upload's.
		{
			name: "dangling: no object",
			inject: func(w *world) {
				w.accept(c1)
				w.marker(c1.ID, "blob", c1.SHA256)
				w.storeRef(rowOf(c1), c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want:      map[string][]string{dangling: {"c1: no object"}},
			completed: 1,
		},
		{
			name: "dangling: blob_key names another object",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				r := rowOf(c1)
				r.key = "uploads/a1"
				w.storeRef(r, c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want:      map[string][]string{dangling: {"c1: blob_key uploads/a1"}},
			completed: 1,
		},
		{
			name: "dangling: the object holds other bytes of the same size",
			inject: func(w *world) {
				w.accept(c1)
				w.putObject(c1.ID, other(c1.ID), true)
				w.marker(c1.ID, "blob", c1.SHA256)
				w.storeRef(rowOf(c1), c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want: map[string][]string{
				dangling: {fmt.Sprintf("c1: row sha %s size %d, object sha %s size %d", c1.SHA256, c1.Size, sum(other(c1.ID)), c1.Size)},
				digest:   {"object uploads/c1: sha " + sum(other(c1.ID))},
			},
			completed: 1,
		},
		{
			name: "dangling: the row records another sha256",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				r := rowOf(c1)
				r.sha = sum(other(c1.ID))
				w.storeRef(r, c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want: map[string][]string{
				dangling: {fmt.Sprintf("c1: row sha %s size %d, object sha %s size %d", sum(other(c1.ID)), c1.Size, c1.SHA256, c1.Size)},
				digest:   {"row c1: sha " + sum(other(c1.ID))},
			},
			completed: 1,
		},
		{
			name: "dangling: the row records another size",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				r := rowOf(c1)
				r.size++
				w.storeRef(r, c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want: map[string][]string{
				dangling: {fmt.Sprintf("c1: row sha %s size %d, object sha %s size %d", c1.SHA256, c1.Size+1, c1.SHA256, c1.Size)},
				digest:   {fmt.Sprintf("row c1: sha %s size %d", c1.SHA256, c1.Size+1)},
			},
			completed: 1,
		},
		{
			name: "object and row agree on bytes that are not the upload's",
			inject: func(w *world) {
				w.accept(c1)
				w.putObject(c1.ID, other(c1.ID), true)
				w.marker(c1.ID, "blob", c1.SHA256)
				r := rowOf(c1)
				r.sha = sum(other(c1.ID))
				w.storeRef(r, c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want: map[string][]string{digest: {
				"object uploads/c1: sha " + sum(other(c1.ID)),
				"row c1: sha " + sum(other(c1.ID)),
			}},
			completed: 1,
		},

		// Rows and markers that do not match what was accepted.
		{
			name: "reference row of an upload never accepted",
			inject: func(w *world) {
				x := upload("x", "s/x", 0)
				w.storeBlob(x)
				w.storeRef(rowOf(x), x.SHA256, true)
			},
			want: map[string][]string{inconsistent: {"stray object uploads/x", "reference row of unaccepted id x"}},
		},
		{
			name: "row of another subject",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				r := rowOf(c1)
				r.subject = "s/other"
				w.storeRef(r, c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want:      map[string][]string{inconsistent: {"row c1: subject s/other"}},
			completed: 1,
		},
		{
			name: "row of another event time",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				r := rowOf(c1)
				r.at = r.at.Add(time.Hour)
				w.storeRef(r, c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want:      map[string][]string{inconsistent: {"row c1: subject s/c time "}},
			completed: 1,
		},
		{
			name: "completed without its blob marker",
			inject: func(w *world) {
				w.accept(c1)
				w.putObject(c1.ID, content(c1.ID), true)
				w.storeRef(rowOf(c1), c1.SHA256, true)
				w.publishCompleted(c1)
			},
			want:      map[string][]string{inconsistent: {`c1: completed, blob marker ""`}},
			completed: 1,
		},
		{
			name: "ref marker of another fingerprint",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				w.storeRef(rowOf(c1), sum(other(c1.ID)), true)
				w.publishCompleted(c1)
			},
			want:      map[string][]string{inconsistent: {fmt.Sprintf("c1: completed, ref marker %q", sum(other(c1.ID)))}},
			completed: 1,
		},
		{
			name: "completed without a reference row",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				w.publishCompleted(c1)
			},
			want: map[string][]string{inconsistent: {
				"c1: completed event without a reference row",
				`c1: completed, ref marker ""`,
			}},
			completed: 1,
		},

		// Invariant 6: the current reference moves forward only.
		{
			name: "current reference left behind",
			inject: func(w *world) {
				w.accept(a3)
				w.storeBlob(a3)
				w.storeRef(rowOf(a3), a3.SHA256, false)
				w.publishCompleted(a3)
			},
			want:      map[string][]string{regressions: {`s/a of owner "": current "a2", newest completed "a3"`}},
			completed: 1,
		},
		{
			name: "current reference left behind on a tie of event time",
			inject: func(w *world) {
				u1, u2 := upload("u1", "s/u", 0), upload("u2", "s/u", 0)
				w.complete(u1)
				w.accept(u2)
				w.storeBlob(u2)
				w.storeRef(rowOf(u2), u2.SHA256, false)
				w.publishCompleted(u2)
			},
			want:      map[string][]string{regressions: {`s/u of owner "": current "u1", newest completed "u2"`}},
			completed: 2,
		},
		{
			name: "no current reference",
			inject: func(w *world) {
				w.accept(c1)
				w.storeBlob(c1)
				w.storeRef(rowOf(c1), c1.SHA256, false)
				w.publishCompleted(c1)
			},
			want:      map[string][]string{regressions: {`s/c of owner "": current "", newest completed "c1"`}},
			completed: 1,
		},
		{
			name: "current reference on another subject's upload",
			inject: func(w *world) {
				w.exec(`UPDATE subject_refs SET upload_id = 'b1', event_time = $1 WHERE subject = 's/a'`, a2.Time.Add(time.Hour))
			},
			want: map[string][]string{regressions: {`s/a of owner "": current "b1", newest completed "a2"`}},
		},
		{
			name: "current reference moved back",
			inject: func(w *world) {
				w.exec(`UPDATE subject_refs SET upload_id = 'a1', event_time = $1 WHERE subject = 's/a'`, a1.Time)
			},
			want: map[string][]string{regressions: {
				`s/a of owner "": current moved back from "a2" to "a1"`,
				`s/a of owner "": current "a1", newest completed "a2"`,
			}},
		},
		{
			name: "current reference moved back, then forward again",
			inject: func(w *world) {
				w.exec(`UPDATE subject_refs SET upload_id = 'a1', event_time = $1 WHERE subject = 's/a'`, a1.Time)
				w.complete(a3)
			},
			want:      map[string][]string{regressions: {`s/a of owner "": current moved back from "a2" to "a1"`}},
			completed: 1,
		},
		{
			name: "current reference moved back on a tie of event time",
			inject: func(w *world) {
				w.exec(`UPDATE subject_refs SET upload_id = 't1' WHERE subject = 's/t'`)
				w.exec(`UPDATE subject_refs SET upload_id = 't2' WHERE subject = 's/t'`)
			},
			want: map[string][]string{regressions: {`s/t of owner "": current moved back from "t2" to "t1"`}},
		},
		{
			name:   "current reference removed",
			inject: func(w *world) { w.exec(`DELETE FROM subject_refs WHERE subject = 's/b'`) },
			want: map[string][]string{regressions: {
				`s/b of owner "": current "b1" removed`,
				`s/b of owner "": current "", newest completed "b1"`,
			}},
		},
	}
}
