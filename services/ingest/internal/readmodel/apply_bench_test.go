package readmodel

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
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
		ids := make([]string, size)
		facts := make([]Fact, size)
		for i := range size {
			ids[i] = fmt.Sprintf("u%d", n+i)
			facts[i] = Completed(completedEvent(ids[i], at), at, uint64(n+i+1))
		}
		recordListed(b, pg.Pool, ids)
		n += size
		b.StartTimer()
		if err := Apply(ctx, pg.Pool, facts...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/upload")
}
