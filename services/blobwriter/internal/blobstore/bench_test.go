package blobstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/services/blobwriter/internal/blobstore"
)

// claimSize is the size of the object BenchmarkClaimCheckedStore stages:
// -claimsize, or BLOBSTORE_BENCH_SIZE, in bytes or with a KiB, MiB or GiB
// suffix.
var claimSize = flag.String("claimsize", envOr("BLOBSTORE_BENCH_SIZE", "64MiB"),
	"size of the object staged by BenchmarkClaimCheckedStore (e.g. 64MiB, 1GiB)")

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

// BenchmarkClaimCheckedStore stages one object of -claimsize bytes in a
// JetStream Object Store (on a nats-server process of its own) and stores
// it, claim-checked, into a file:// bucket through Writer.Store. Besides
// MB/s it reports, sampled every millisecond while the object is read and
// less their value just before:
//
//   - peak-heap-MiB, the highest HeapInuse: what is held plus the garbage
//     GC pacing lets pile up (up to about the live heap at GOGC=100);
//   - peak-live-MiB, the highest live heap a GC marked: what is held.
//
// The server runs in this process too, so both include what it holds to
// serve the read.
//
//	go test ./internal/blobstore -run '^$' -bench ClaimCheckedStore -benchtime 1x -count 3 -claimsize 1GiB
func BenchmarkClaimCheckedStore(b *testing.B) {
	size, err := parseSize(*claimSize)
	if err != nil {
		b.Fatal(err)
	}
	_, js := testenv.StartNATS(b).Connect()
	ctx := context.Background()
	staging, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "uploads-staging"})
	if err != nil {
		b.Fatalf("CreateObjectStore: %v", err)
	}
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(&pseudoRandom{r: rand.NewChaCha8([32]byte{1})}, size), h)
	if _, err := staging.Put(ctx, jetstream.ObjectMeta{Name: "bench"}, src); err != nil {
		b.Fatalf("Put: %v", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))

	bucket := openBucket(b, "file://"+b.TempDir())
	w := &blobstore.Writer{Bucket: bucket, Claims: claimcheck.ObjectClaims{JS: js}}

	var peak struct{ inuse, live float64 }
	b.SetBytes(size)
	b.ResetTimer()
	const id = "bench" // a claim check names its own upload's staged object
	for range b.N {
		b.StopTimer()
		ev := claimCheck(b, id, "nats-object://uploads-staging/"+id, sum)
		runtime.GC()
		base := readHeap()
		stop := sampleHeap()
		b.StartTimer()

		if _, err := w.Store(ctx, ev); err != nil {
			b.Fatalf("Store: %v", err)
		}

		b.StopTimer()
		top := stop()
		peak.inuse = max(peak.inuse, mib(top.inuse-base.inuse))
		peak.live = max(peak.live, mib(top.live-base.live))
		if err := bucket.Delete(ctx, w.Key(id)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(peak.inuse, "peak-heap-MiB")
	b.ReportMetric(peak.live, "peak-live-MiB")
}

// pseudoRandom is an endless deterministic reader of incompressible bytes.
type pseudoRandom struct{ r *rand.ChaCha8 }

func (p *pseudoRandom) Read(b []byte) (int, error) { return p.r.Read(b) }

var heapMetrics = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/gc/heap/live:bytes",
}

// heap is what sampleHeap watches: HeapInuse, and the live heap the last
// GC marked (unlike HeapInuse, free of the garbage GC pacing lets pile up).
type heap struct{ inuse, live uint64 }

// readHeap reads the heap's metrics without stopping the world.
func readHeap() heap {
	s := make([]metrics.Sample, len(heapMetrics))
	for i, name := range heapMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	return heap{inuse: s[0].Value.Uint64() + s[1].Value.Uint64(), live: s[2].Value.Uint64()}
}

func mib(n uint64) float64 { return float64(int64(n)) / (1 << 20) }

// sampleHeap samples readHeap every millisecond until the returned function
// is called, which returns the highest values seen.
func sampleHeap() (stop func() heap) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var peak heap
	sample := func() {
		h := readHeap()
		peak.inuse, peak.live = max(peak.inuse, h.inuse), max(peak.live, h.live)
	}
	wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() heap {
		close(done)
		wg.Wait()
		sample()
		return peak
	}
}
