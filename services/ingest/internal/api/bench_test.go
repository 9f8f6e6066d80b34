package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
)

// BenchmarkPostUpload posts new 4 KiB uploads, without Prefer: wait, from
// as many concurrent clients as -cpu times 16 (b.SetParallelism): the
// request path of ingest alone, over real JetStream and Postgres, with the
// client in the same process. uploads/s and the mean batch size are
// reported.
func BenchmarkPostUpload(b *testing.B) {
	e := setup(b, func(o *options) { o.quiet = true })
	body := randomBytes(4<<10, 1)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	var n, failed atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/uploads?subject=users/1/avatar", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+aliceToken)
			req.Header.Set("Idempotency-Key", fmt.Sprintf("bench-%d", n.Add(1)))
			req.Header.Set("Content-Type", "image/png")
			resp, err := client.Do(req)
			if err != nil {
				failed.Add(1)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				failed.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "uploads/s")
	if sum, count := e.histogram("blobref_ingest_batch_size"); count > 0 {
		b.ReportMetric(sum/count, "uploads/batch")
	}
	if f := failed.Load(); f > 0 {
		b.Errorf("%d of %d uploads not accepted", f, b.N)
	}
	client.CloseIdleConnections()
}
