package uploads

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// TestOutboxCost measures what keeping the inline bytes in the record until
// the publish is recorded costs Postgres: the write-ahead log that
// recordUploads and recordPublishes write for a batch of 4 KiB uploads, with
// the outbox and without it, read from EXPLAIN (ANALYZE, WAL) of the very
// statements. WAL is what the outbox adds to every upload; the figures are
// logged. What must hold is that the outbox does write the bytes: at least
// their size more WAL per upload than without it.
func TestOutboxCost(t *testing.T) {
	t.Parallel()
	const batch, size = 64, 4096
	pg := testenv.StartPostgres(t)
	s := &Service{Pool: pg.Pool}

	round := 0
	measure := func(outbox bool) (insert, update wal) {
		t.Helper()
		round++
		var (
			ids  []string
			jobs []*job
		)
		for i := range batch {
			id := fmt.Sprintf("outbox-%d-%d", round, i)
			j := &job{rec: record{ID: id, Caller: "alice", Key: id, Subject: "users/1/avatar", ContentType: "image/png",
				Size: size, SHA256: fmt.Sprintf("%064x", i), CreatedAt: time.Now()}, insert: true}
			if outbox {
				j.inline = make([]byte, size)
				_, _ = rand.Read(j.inline) // incompressible, as most media are
			}
			ids, jobs = append(ids, id), append(jobs, j)
		}
		insert = explainWAL(t, s, recordUploads, recordArgs(jobs, time.Minute)...)
		// Each record holds its own upload's bytes, cut from the batch's.
		for _, j := range jobs {
			var payload []byte
			if err := pg.Pool.QueryRow(context.Background(), `SELECT payload FROM ingest_uploads WHERE id = $1`, j.rec.ID).Scan(&payload); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(payload, j.inline) || (payload == nil) != (j.inline == nil) {
				t.Fatalf("%s: recorded %d bytes of outbox, want its own %d", j.rec.ID, len(payload), len(j.inline))
			}
		}
		ats := make([]*time.Time, batch)
		seqs := make([]*int64, batch)
		for i := range ats {
			at, seq := time.Now(), int64(i+1)
			ats[i], seqs[i] = &at, &seq
		}
		update = explainWAL(t, s, recordPublishes, ids, make([]int, batch), ats, seqs)
		if n := pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = ANY($1) AND publish_count = 1 AND payload IS NULL`, ids); n != batch {
			t.Fatalf("recorded and published: got %d uploads, want %d", n, batch)
		}
		return insert, update
	}
	_, _ = measure(false) // warm up: the tables' first pages
	withIns, withUpd := measure(true)
	noIns, noUpd := measure(false)
	per := func(w wal) string {
		return fmt.Sprintf("%d B in %d records (%d full pages)", w.Bytes/batch, w.Records/batch, w.FPI)
	}
	t.Logf("WAL per %d-byte upload, in a batch of %d:\n"+
		"  record          with the outbox %s, without %s\n"+
		"  record publish  with the outbox %s, without %s",
		size, batch, per(withIns), per(noIns), per(withUpd), per(noUpd))
	// The bytes are durable only if the record's WAL holds them: at least
	// their size per upload (a few bytes of row header less than the same
	// record without them can come out under it).
	if per := withIns.Bytes / batch; per < size {
		t.Errorf("recording with the outbox writes %d bytes of WAL per upload, less than the %d bytes it keeps", per, size)
	}
	if extra := (withIns.Bytes + withUpd.Bytes - noIns.Bytes - noUpd.Bytes) / batch; extra > 2*size {
		t.Errorf("the outbox adds %d bytes of WAL per upload, want at most twice the %d bytes it keeps", extra, size)
	}
}

// wal is the write-ahead log a statement wrote.
type wal struct {
	Records int64 `json:"WAL Records"`
	FPI     int64 `json:"WAL FPI"`
	Bytes   int64 `json:"WAL Bytes"`
}

// explainWAL runs sql with args under EXPLAIN (ANALYZE, WAL) and returns
// the WAL of the whole statement: its top node's, which includes every
// node below it, the CTEs' too.
func explainWAL(t *testing.T, s *Service, sql string, args ...any) wal {
	t.Helper()
	var out []struct {
		Plan json.RawMessage `json:"Plan"`
	}
	var raw []byte
	if err := s.Pool.QueryRow(context.Background(), "EXPLAIN (ANALYZE, WAL, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
		t.Fatalf("explain: %v", err)
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
		t.Fatalf("explain: %s: %v", raw, err)
	}
	var top struct{ wal }
	if err := json.Unmarshal(out[0].Plan, &top); err != nil {
		t.Fatalf("explain: %v", err)
	}
	return top.wal
}
