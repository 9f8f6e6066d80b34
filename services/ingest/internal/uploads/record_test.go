package uploads

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// A request whose record Postgres refuses fails alone: the rest of its
// batch is recorded.
func TestABadRecordFailsAlone(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := &Service{Pool: pg.Pool}
	var jobs []*job
	for i := range 3 {
		rec := record{
			ID: fmt.Sprintf("id-%d", i), Caller: "alice", Key: fmt.Sprintf("key-%d", i), Subject: "users/1/avatar",
			ContentType: "image/png", Size: 1, SHA256: fmt.Sprintf("%064x", i), CreatedAt: time.Now(),
		}
		if i == 1 {
			rec.Subject = "users/1/\x00" // no text in Postgres holds a NUL
		}
		jobs = append(jobs, &job{ctx: context.Background(), rec: rec, inline: []byte{byte(i)}, insert: true})
	}
	s.insert(context.Background(), jobs)
	var unavailable *UnavailableError
	for i, j := range jobs {
		switch {
		case i == 1 && (j.err == nil || j.won || errors.As(j.err, &unavailable)):
			t.Errorf("the bad job: got won %v, %v; want a failure of its own, not an outage", j.won, j.err)
		case i != 1 && (j.err != nil || !j.won):
			t.Errorf("job %d: got won %v, %v; want it recorded", i, j.won, j.err)
		}
	}
	if n := pg.Count(t, `SELECT count(*) FROM ingest_uploads`); n != 2 {
		t.Errorf("records: got %d, want 2", n)
	}
}
