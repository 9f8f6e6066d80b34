package marker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCheckDoRecord(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := marker.NewStore(pg.Pool)
	ctx := context.Background()

	if _, ok, err := s.Get(ctx, "u1", "blob"); err != nil || ok {
		t.Fatalf("Get before record: got ok=%v err=%v, want absent", ok, err)
	}
	c, err := s.Claim(ctx, "u1", "blob")
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if _, ok := c.Marker(); ok {
		t.Fatal("Claim: got a marker, want none")
	}
	if _, err := s.Claim(ctx, "u1", "blob"); !errors.Is(err, marker.ErrBusy) {
		t.Fatalf("second Claim: got %v, want ErrBusy", err)
	}
	if other, err := s.Claim(ctx, "u1", "ref"); err != nil {
		t.Fatalf("Claim of another step: %v", err)
	} else {
		other.Release()
	}
	m, won, err := c.Record(ctx, marker.Marker{UploadID: "u1", Step: "blob", Fingerprint: "aa", Result: json.RawMessage(`{"n":1}`)}, nil)
	if err != nil || !won {
		t.Fatalf("Record: got won=%v err=%v, want won", won, err)
	}
	if m.CreatedAt.IsZero() {
		t.Error("Record: CreatedAt not set")
	}
	c.Release()
	c.Release() // idempotent

	c2, err := s.Claim(ctx, "u1", "blob")
	if err != nil {
		t.Fatalf("Claim after release: %v", err)
	}
	defer c2.Release()
	got, ok := c2.Marker()
	var result struct{ N int }
	if err := json.Unmarshal(got.Result, &result); err != nil || !ok || got.Fingerprint != "aa" || result.N != 1 {
		t.Fatalf("marker under claim: got %+v ok=%v (%v), want fingerprint aa result {n:1}", got, ok, err)
	}

	ran := false
	m, won, err = c2.Record(ctx, marker.Marker{UploadID: "u1", Step: "blob", Fingerprint: "bb", Result: json.RawMessage(`{}`)},
		func(context.Context, pgx.Tx) error { ran = true; return nil })
	if err != nil || won || ran {
		t.Fatalf("second Record: got won=%v ran=%v err=%v, want lost without running inTx", won, ran, err)
	}
	if m.Fingerprint != "aa" {
		t.Errorf("second Record: got winner fingerprint %q, want aa", m.Fingerprint)
	}
}

// Claims are per schema: the same (id, step) in another schema of the
// same database is another claim.
func TestClaimsArePerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := marker.NewStore(testenv.StartPostgres(t).Pool)
	b := marker.NewStore(testenv.StartPostgres(t).Pool)
	ca, err := a.Claim(ctx, "same", "blob")
	if err != nil {
		t.Fatalf("Claim in schema a: %v", err)
	}
	defer ca.Release()
	cb, err := b.Claim(ctx, "same", "blob")
	if err != nil {
		t.Fatalf("Claim of the same id and step in schema b: got %v, want the claim", err)
	}
	defer cb.Release()
	if _, err := a.Claim(ctx, "same", "blob"); !errors.Is(err, marker.ErrBusy) {
		t.Fatalf("second Claim in schema a: got %v, want ErrBusy", err)
	}
}

func TestRecordRollsBackWithInTx(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := marker.NewStore(pg.Pool)
	ctx := context.Background()
	boom := errors.New("boom")
	_, _, err := s.Record(ctx, marker.Marker{UploadID: "u2", Step: "ref", Fingerprint: "aa"},
		func(ctx context.Context, tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time) VALUES ('u2','s','k',1,'aa','text/plain',now())`); err != nil {
				return err
			}
			return boom
		})
	if !errors.Is(err, boom) {
		t.Fatalf("Record: got %v, want boom", err)
	}
	if n := pg.Count(t, `SELECT count(*) FROM step_markers`); n != 0 {
		t.Errorf("markers after rollback: got %d, want 0", n)
	}
	if n := pg.Count(t, `SELECT count(*) FROM upload_refs`); n != 0 {
		t.Errorf("refs after rollback: got %d, want 0", n)
	}
}

func TestConcurrentRecordHasOneWinner(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := marker.NewStore(pg.Pool)
	var wins, ran atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, won, err := s.Record(context.Background(), marker.Marker{UploadID: "u3", Step: "ref", Fingerprint: "aa"},
				func(context.Context, pgx.Tx) error { ran.Add(1); return nil })
			if err != nil {
				t.Errorf("Record: %v", err)
			}
			if won {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || ran.Load() != 1 {
		t.Errorf("got %d winners and %d inTx runs, want 1 and 1", wins.Load(), ran.Load())
	}
}

// A batch claims what is not finished and not busy, reads the markers under
// its claims, records many markers in one transaction, gives up their
// claims as it commits, and reports the ones others recorded.
func TestBatchClaimAndRecord(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := marker.NewStore(pg.Pool)
	ctx := context.Background()

	if _, _, err := s.Record(ctx, marker.Marker{UploadID: "done", Step: "blob", Fingerprint: "old", Result: json.RawMessage(`1`)}, nil); err != nil {
		t.Fatal(err)
	}
	busy, err := s.Claim(ctx, "busy", "blob")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Release()

	found, err := s.GetMany(ctx, "blob", []string{"a", "done", "busy"})
	if err != nil || len(found) != 1 || found["done"].Fingerprint != "old" {
		t.Fatalf("GetMany: got %v, %v; want only done", found, err)
	}
	cs, err := s.ClaimMany(ctx, "blob", []string{"a", "b", "done", "busy", "a"})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"a": true, "b": true, "done": false, "busy": false} {
		if got := cs.Held(id); got != want {
			t.Errorf("Held(%s): got %v, want %v", id, got, want)
		}
	}
	if m, ok := cs.Marker("done"); !ok || m.Fingerprint != "old" {
		t.Errorf("Marker(done): got %+v %v, want the recorded one", m, ok)
	}
	if n := heldLocks(t, pg); n != 3 {
		t.Errorf("advisory locks held: got %d, want 3 (busy, a, b; done is finished and needs none)", n)
	}
	if _, ok := cs.Marker("a"); ok {
		t.Error("Marker(a): got one, want none")
	}

	var inTxWon []int
	stored, won, refused, err := cs.Record(ctx, []marker.Marker{
		{UploadID: "a", Step: "blob", Fingerprint: "fa"},
		{UploadID: "done", Step: "blob", Fingerprint: "new"},
		{UploadID: "b", Step: "blob", Fingerprint: "fb", Result: json.RawMessage(`{"k":2}`)},
	}, marker.Writes{InTx: func(_ context.Context, _ pgx.Tx, w []int) ([]error, error) { inTxWon = w; return nil, nil }})
	if err != nil || refused != nil {
		t.Fatalf("Record: got %v, refused %v; want neither", err, refused)
	}
	if !won[0] || won[1] || !won[2] || len(inTxWon) != 2 {
		t.Fatalf("Record: got won %v, inTx with %v; want a and b won", won, inTxWon)
	}
	if stored[1].Fingerprint != "old" || stored[2].CreatedAt.IsZero() || string(stored[2].Result) != `{"k": 2}` && string(stored[2].Result) != `{"k":2}` {
		t.Errorf("Record: got %+v, want the old marker of done and b's new one", stored)
	}
	if n := heldLocks(t, pg); n != 1 {
		t.Errorf("advisory locks held after Record: got %d, want 1 (busy; a and b are given up with the commit)", n)
	}
	cs.Release()
	cs.Release()
	if n := heldLocks(t, pg); n != 1 {
		t.Errorf("advisory locks held after release: got %d, want 1 (busy; a named twice is unlocked too)", n)
	}

	// Another session finds a and b finished and takes no claim on them.
	again, err := s.ClaimMany(ctx, "blob", []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Release()
	if again.Held("a") || again.Held("b") {
		t.Error("claims on finished steps: got some, want none")
	}
	if m, ok := again.Marker("b"); !ok || m.Fingerprint != "fb" {
		t.Errorf("Marker(b): got %+v %v, want fb", m, ok)
	}
}

// A claim given up without a record (the side effect failed) is free for
// the next worker, and locks named twice are taken and given up once.
func TestReleasedClaimIsFree(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := marker.NewStore(pg.Pool)
	ctx := context.Background()
	cs, err := s.ClaimMany(ctx, "blob", []string{"a", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if n := heldLocks(t, pg); n != 2 {
		t.Errorf("advisory locks held: got %d, want 2", n)
	}
	other, err := s.ClaimMany(ctx, "blob", []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if other.Held("a") || other.Held("b") {
		t.Error("second claim while held: got some, want none")
	}
	other.Release()
	cs.Release()
	cs.Release()
	if n := heldLocks(t, pg); n != 0 {
		t.Errorf("advisory locks held after release: got %d, want 0", n)
	}
	again, err := s.ClaimMany(ctx, "blob", []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Release()
	if !again.Held("a") || !again.Held("b") {
		t.Error("claims after release: want a and b held")
	}
}

// heldLocks counts the advisory locks held on this schema's claims of busy,
// a, b and done (a bigint key shows as classid high, objid low).
func heldLocks(t *testing.T, pg *testenv.Postgres) int {
	t.Helper()
	return heldLocksOf(t, pg, "busy", "a", "b", "done")
}

// heldLocksOf counts the advisory locks held on this schema's claims of the
// blob step of ids.
func heldLocksOf(t *testing.T, pg *testenv.Postgres, ids ...string) int {
	t.Helper()
	return pg.Count(t, `
		SELECT count(*) FROM pg_locks l, unnest($1::text[]) AS id
		WHERE l.locktype = 'advisory' AND l.granted
		AND (l.classid::bigint << 32) | l.objid::bigint = hashtextextended(current_schema() || '/blob/' || id, 0)`, ids)
}

// A record that fails rolls back, keeps its claims until Release and leaves
// the connection usable: with the step's writes (inTx fails) and without
// (the insert itself fails).
func TestFailedRecordKeepsClaims(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := marker.NewStore(pg.Pool)
	ctx := context.Background()
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		m    marker.Marker
		inTx marker.InTx
		want error
	}{
		{"inTx", marker.Marker{UploadID: "a", Step: "blob", Fingerprint: "fa"},
			func(context.Context, pgx.Tx, []int) ([]error, error) { return nil, boom }, boom},
		{"insert", marker.Marker{UploadID: "a", Step: "blob", Fingerprint: "fa", Result: json.RawMessage(`not json`)}, nil, nil},
	} {
		cs, err := s.ClaimMany(ctx, "blob", []string{"a"})
		if err != nil {
			t.Fatal(err)
		}
		_, _, _, err = cs.Record(ctx, []marker.Marker{tc.m}, marker.Writes{InTx: tc.inTx})
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Fatalf("%s: Record: got %v, want an error (%v)", tc.name, err, tc.want)
		}
		if n := heldLocks(t, pg); n != 1 {
			t.Errorf("%s: advisory locks held after the failed record: got %d, want 1", tc.name, n)
		}
		cs.Release()
		if n := heldLocks(t, pg); n != 0 {
			t.Errorf("%s: advisory locks held after release: got %d, want 0", tc.name, n)
		}
		if n := pg.Count(t, `SELECT count(*) FROM step_markers`); n != 0 {
			t.Errorf("%s: markers: got %d, want 0", tc.name, n)
		}
	}
	// The connections went back to the pool outside any transaction.
	cs, err := s.ClaimMany(ctx, "blob", []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, won, _, err := cs.Record(ctx, []marker.Marker{{UploadID: "a", Step: "blob", Fingerprint: "fa"}}, marker.Writes{}); err != nil || !won[0] {
		t.Fatalf("Record after failures: got won %v, %v; want won", won, err)
	}
	cs.Release()
	if n := heldLocks(t, pg); n != 0 {
		t.Errorf("advisory locks held at the end: got %d, want 0", n)
	}
}

// The step's writes may refuse some of a batch: Record (with claims, or
// RecordMany without) rolls back and records the others in a transaction
// of their own, and the refused are not stored. Under claims, the refused
// keep theirs until Release; without, a marker another writer recorded
// first is reported as stored, not won.
func TestRecordWithoutTheRefused(t *testing.T) {
	t.Parallel()
	for _, claimed := range []bool{true, false} {
		t.Run(map[bool]string{true: "claims", false: "no claims"}[claimed], func(t *testing.T) {
			t.Parallel()
			pg := testenv.StartPostgres(t)
			s := marker.NewStore(pg.Pool)
			ctx := context.Background()
			record := s.RecordMany
			var cs *marker.Claims
			if claimed {
				var err error
				if cs, err = s.ClaimMany(ctx, "blob", []string{"a", "b", "busy"}); err != nil {
					t.Fatal(err)
				}
				record = cs.Record
			} else if _, _, err := s.Record(ctx, marker.Marker{UploadID: "b", Step: "blob", Fingerprint: "other"}, nil); err != nil {
				t.Fatal(err)
			}
			no := errors.New("not busy")
			var calls [][]int
			stored, won, refused, err := record(ctx, []marker.Marker{
				{UploadID: "a", Step: "blob", Fingerprint: "fa"},
				{UploadID: "busy", Step: "blob", Fingerprint: "fc"},
				{UploadID: "b", Step: "blob", Fingerprint: "fb"},
			}, marker.Writes{InTx: func(_ context.Context, _ pgx.Tx, w []int) ([]error, error) {
				calls = append(calls, w)
				errs := make([]error, len(w))
				for k, i := range w {
					if i == 1 {
						errs[k] = no
					}
				}
				return errs, nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			if len(refused) != 3 || refused[0] != nil || !errors.Is(refused[1], no) || refused[2] != nil {
				t.Errorf("refused: got %v, want busy's error only", refused)
			}
			wantB, wonB, callsB := "fb", true, 1 // b is recorded here
			if !claimed {
				wantB, wonB, callsB = "other", false, 0 // b was there: inTx never sees it
			}
			if !won[0] || won[1] || won[2] != wonB || stored[0].UploadID != "a" || stored[2].Fingerprint != wantB {
				t.Errorf("Record: got won %v, stored %+v; want a won, b won: %v with fingerprint %s", won, stored, wonB, wantB)
			}
			if len(calls) != 2 || len(calls[0]) != 2+callsB || len(calls[1]) != 1+callsB {
				t.Errorf("inTx calls: got %v, want those inserted, then those it accepted", calls)
			}
			if got := pg.Map(t, `SELECT upload_id, fingerprint FROM step_markers`); len(got) != 2 || got["a"] != "fa" || got["b"] != wantB {
				t.Errorf("markers: got %v, want a and b", got)
			}
			if !claimed {
				if n := heldLocks(t, pg); n != 0 {
					t.Errorf("advisory locks held: got %d, want 0", n)
				}
				return
			}
			if n := heldLocks(t, pg); n != 1 {
				t.Errorf("advisory locks held after Record: got %d, want 1 (busy's)", n)
			}
			cs.Release()
			if n := heldLocks(t, pg); n != 0 {
				t.Errorf("advisory locks held after release: got %d, want 0", n)
			}
		})
	}
}

// A record whose writes are queued with the markers (Writes.Queue) commits
// them together when every marker is new, without InTx. When a marker
// exists, or a queued write fails, none of the queued writes commit: the
// record runs again through InTx, which skips and refuses as ever, and the
// claims stay held until that record gives them up.
func TestQueuedRecord(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := marker.NewStore(pg.Pool)
	ctx := context.Background()
	if _, err := pg.Pool.Exec(ctx, `CREATE TABLE side (id text PRIMARY KEY, via text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Pool.Exec(ctx, `INSERT INTO side VALUES ('d', 'hand')`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Record(ctx, marker.Marker{UploadID: "done", Step: "blob", Fingerprint: "old"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ids          []string
		queued, inTx [][]int // the calls, with their indexes
		won          []bool
		side         map[string]string
		refuseInTx   string // InTx refuses this id
		refused      []bool
	}{
		// All new: one round trip, InTx never runs.
		{ids: []string{"a", "b"}, queued: [][]int{{0, 1}}, won: []bool{true, true},
			side: map[string]string{"a": "queue", "b": "queue"}},
		// done's marker exists: the queued insert of c rolls back with it.
		{ids: []string{"c", "done"}, queued: [][]int{{0, 1}}, inTx: [][]int{{0}}, won: []bool{true, false},
			side: map[string]string{"c": "inTx"}},
		// d's row exists, and InTx refuses it: e alone is recorded, through
		// the queue again.
		{ids: []string{"d", "e"}, queued: [][]int{{0, 1}, {1}}, inTx: [][]int{{0, 1}}, won: []bool{false, true},
			side: map[string]string{"d": "hand", "e": "queue"}, refuseInTx: "d", refused: []bool{true, false}},
	} {
		ms := make([]marker.Marker, len(tc.ids))
		for i, id := range tc.ids {
			ms[i] = marker.Marker{UploadID: id, Step: "blob", Fingerprint: "f" + id}
		}
		var queued, inTx [][]int
		rows := func(idx []int) []string {
			out := make([]string, len(idx))
			for k, i := range idx {
				out[k] = tc.ids[i]
			}
			return out
		}
		refuse := errors.New("refused")
		w := marker.Writes{
			Queue: func(b *pgx.Batch, idx []int) {
				queued = append(queued, idx)
				b.Queue(`INSERT INTO side SELECT unnest($1::text[]), 'queue'`, rows(idx))
			},
			InTx: func(ctx context.Context, tx pgx.Tx, won []int) ([]error, error) {
				inTx = append(inTx, won)
				var errs []error
				for k, id := range rows(won) {
					if id == tc.refuseInTx {
						errs = make([]error, len(won))
						errs[k] = refuse
					}
				}
				if errs != nil {
					return errs, nil
				}
				_, err := tx.Exec(ctx, `INSERT INTO side SELECT unnest($1::text[]), 'inTx' ON CONFLICT DO NOTHING`, rows(won))
				return nil, err
			},
		}
		cs, err := s.ClaimMany(ctx, "blob", tc.ids)
		if err != nil {
			t.Fatal(err)
		}
		stored, won, refused, err := cs.Record(ctx, ms, w)
		if err != nil {
			t.Fatalf("%v: Record: %v", tc.ids, err)
		}
		if fmt.Sprint(queued) != fmt.Sprint(tc.queued) || fmt.Sprint(inTx) != fmt.Sprint(tc.inTx) {
			t.Errorf("%v: got Queue with %v and InTx with %v, want %v and %v", tc.ids, queued, inTx, tc.queued, tc.inTx)
		}
		for i := range tc.ids {
			if won[i] != tc.won[i] || won[i] && stored[i].CreatedAt.IsZero() {
				t.Errorf("%v: %s: got won %v, created %v; want won %v, created when won", tc.ids, tc.ids[i], won[i], stored[i].CreatedAt, tc.won[i])
			}
			if got := refused != nil && refused[i] != nil; tc.refused != nil && got != tc.refused[i] {
				t.Errorf("%v: %s: got refused %v, want %v", tc.ids, tc.ids[i], got, tc.refused[i])
			}
		}
		got := pg.Map(t, `SELECT id, via FROM side WHERE id = ANY($1)`, tc.ids)
		if fmt.Sprint(got) != fmt.Sprint(tc.side) {
			t.Errorf("%v: side rows: got %v, want %v", tc.ids, got, tc.side)
		}
		wantHeld := 0
		if tc.refuseInTx != "" {
			wantHeld = 1 // the refused keeps its claim until Release
		}
		if n := heldLocksOf(t, pg, tc.ids...); n != wantHeld {
			t.Errorf("%v: advisory locks held after Record: got %d, want %d", tc.ids, n, wantHeld)
		}
		cs.Release()
	}
	if got := pg.Map(t, `SELECT upload_id, fingerprint FROM step_markers`); fmt.Sprint(got) != fmt.Sprint(map[string]string{
		"a": "fa", "b": "fb", "c": "fc", "done": "old", "e": "fe"}) {
		t.Errorf("markers: got %v", got)
	}
}

// TestMarkersKeepTheirOwnResults reads several markers in one query, by
// GetMany and by a batch claim: each keeps its own result, as stored.
func TestMarkersKeepTheirOwnResults(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := marker.NewStore(pg.Pool)
	ctx := context.Background()

	ids := []string{"a", "b", "c"}
	for i, id := range ids {
		result := json.RawMessage(fmt.Sprintf(`{"n":%d,"id":%q}`, i, id))
		if _, _, err := s.Record(ctx, marker.Marker{UploadID: id, Step: "blob", Fingerprint: "f" + id, Result: result}, nil); err != nil {
			t.Fatal(err)
		}
	}
	check := func(how string, m marker.Marker, ok bool, i int) {
		t.Helper()
		var got struct {
			N  int    `json:"n"`
			ID string `json:"id"`
		}
		if !ok {
			t.Fatalf("%s: marker %s missing", how, ids[i])
		}
		if err := json.Unmarshal(m.Result, &got); err != nil || got.N != i || got.ID != ids[i] || m.Fingerprint != "f"+ids[i] {
			t.Errorf("%s: marker %s: got %s (%v), fingerprint %s; want its own result", how, ids[i], m.Result, err, m.Fingerprint)
		}
	}
	found, err := s.GetMany(ctx, "blob", ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		m, ok := found[id]
		check("GetMany", m, ok, i)
	}
	cs, err := s.ClaimMany(ctx, "blob", ids)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Release()
	for i, id := range ids {
		m, ok := cs.Marker(id)
		check("ClaimMany", m, ok, i)
	}
}
