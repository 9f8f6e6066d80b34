package readmodel

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// BenchmarkApplyCompletedBatch is the projector's Postgres time per
// completed event: batches of 64, as its pull sends them, each completing
// uploads ingest recorded and published.
func BenchmarkApplyCompletedBatch(b *testing.B) {
	const size = 64
	pg := testenv.StartPostgres(b)
	ctx := context.Background()
	at := time.Now().UTC()
	var n int
	for b.Loop() {
		b.StopTimer()
		if _, err := pg.Pool.Exec(ctx, `INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type,
				size, sha256, published_at, published_seq, publish_count)
			SELECT 'u' || i, 'alice', 'u' || i, 'users/1/u' || i, 'text/plain', 1, 'aa', now(), i, 1
			FROM generate_series($1::int, $1::int + $2::int - 1) i`, n, size); err != nil {
			b.Fatal(err)
		}
		if _, err := pg.Pool.Exec(ctx, `INSERT INTO ingest_incomplete (id)
			SELECT 'u' || i FROM generate_series($1::int, $1::int + $2::int - 1) i`, n, size); err != nil {
			b.Fatal(err)
		}
		facts := make([]Fact, size)
		for i := range size {
			id := fmt.Sprintf("u%d", n+i)
			blob := events.Blob{Key: events.DefaultKeyPrefix + id, Size: 1, SHA256: "aa", ContentType: "text/plain"}
			ev := &events.Event{ID: id, Owner: "alice", Subject: "users/1/" + id, SHA256: "aa", Time: at,
				Ref: &events.Reference{ID: id, Owner: "alice", Subject: "users/1/" + id, Blob: blob, EventTime: at}}
			facts[i] = Completed(ev, at, uint64(n+i+1))
		}
		n += size
		b.StartTimer()
		if err := Apply(ctx, pg.Pool, facts...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/upload")
}
