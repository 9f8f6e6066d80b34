package throughput

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/bench/internal/benchtest"

	"go.uber.org/goleak"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/memblob"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCeiling(t *testing.T) {
	t.Parallel()
	// The figures: 28.5 µs (JetStream) + 110 µs (fileblob) + 4 × 18 µs
	// (rows) per upload on 2 cores.
	got := Ceiling(2, 28500*time.Nanosecond*2, 110*time.Microsecond, 72*time.Microsecond)
	if got < 8000 || got > 8400 {
		t.Errorf("got %.0f uploads/s, want about 8,200", got)
	}
	if got := Ceiling(2); got != 0 {
		t.Errorf("no stages: got %v, want 0", got)
	}
}

func TestConcurrencyFrom(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  []string
		want int
	}{
		{nil, 8},
		{[]string{"CONSUMER_CONCURRENCY=32"}, 32},
		{[]string{"CONSUMER_CONCURRENCY=4", "X=1", "CONSUMER_CONCURRENCY=16"}, 16},
		{[]string{"CONSUMER_CONCURRENCY=lots"}, 8},
	} {
		if got := ConcurrencyFrom(tc.env, 8); got != tc.want {
			t.Errorf("%q: got %d, want %d", tc.env, got, tc.want)
		}
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	if got, want := summary([]float64{3, 1, 2}, "%.0f"), "2 (1–3)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := summary([]float64{5}, "%.1f"), "5.0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestSmoke runs a tiny version of the whole benchmark, so that it keeps
// working: the real programs, the floors, a run with republish, the paced
// run, the backlog phase and a report with every figure, over file:// and
// mem://. It asserts no timing.
func TestSmoke(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark reads Linux's /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := Config{
		Uploads: 300, Size: 4 << 10, Runs: 1, Configs: []string{File, Mem},
		Floors: true, Paced: true, Republish: true, Backlog: 500, BacklogDuration: 2 * time.Second,
		Warmup: 20, Window: 256, Concurrency: 4, Batch: 50,
		DatabaseURL: benchtest.DatabaseURL(), WorkDir: t.TempDir(), Command: "smoke test", Progress: benchtest.LogWriter{T: t},
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(rep.Configs) != 2 || len(rep.Configs[0].Runs) != 1 || rep.Configs[0].Paced == nil || rep.Configs[0].Runs[0].Republish == nil {
		t.Fatalf("got %+v, want a file:// run with its republish and a paced run, then mem://", rep.Configs)
	}
	if m := rep.Configs[1]; m.Name != Mem || len(m.Runs) != 1 || m.Runs[0].N != 300 {
		t.Errorf("got %+v, want one mem:// run of 300 uploads", m)
	}
	r := rep.Configs[0].Runs[0]
	if r.N != 300 || r.Rate() <= 0 || r.Latency[0] <= 0 || r.Latency[0] > r.Latency[1] || r.Latency[1] > r.Latency[2] {
		t.Errorf("got %d uploads at %.0f/s with latencies %v, want 300 with 0 < p50 <= p99 <= max", r.N, r.Rate(), r.Latency)
	}
	for _, name := range Processes {
		if _, ok := r.Usage.CPU[name]; !ok {
			t.Errorf("no CPU figure for %s", name)
		}
	}
	for _, name := range []string{BlobWriter, RefWriter} {
		if r.Peak[name] <= 0 || rep.Backlog.Peak[name] <= 0 {
			t.Errorf("%s: got peak RSS %d and %d under the backlog, want both positive", name, r.Peak[name], rep.Backlog.Peak[name])
		}
	}
	f := rep.Floors
	if len(f.JetStream) != 1 || len(f.Bucket[File]) != 1 || len(f.Postgres) != 1 || f.JetStream[0].Rate() <= 0 {
		t.Errorf("got floors %+v, want one run of each", f)
	}
	if rep.CeilingOf(File) <= 0 {
		t.Error("got no ceiling for file://")
	}

	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", out.String())
	for _, want := range []string{
		"command   smoke test", "uploads/s end to end", "latency publish→completed p99", "CPU s/1,000 uploads: blobwriter",
		"CPU s/1,000 uploads: postgres", "CPU s/1,000 uploads: nats-server", "peak RSS refwriter", "republish (every step skipped)", "republish CPU µs/event: nats-server",
		"paced latency", "(a) JetStream", "(b) file:// bucket", "(c) Postgres rows", "ceiling file:// = ", "of the ceiling",
		"clients together", "memory under a backlog", "== targets", "file:// ≥ 6000 uploads/s", "republish ≥ 10000",
		"RSS ≤ 64 MiB with 500 pending", "== mem:// pipeline", "mem:// ≥ 0.5 of floor (a)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
