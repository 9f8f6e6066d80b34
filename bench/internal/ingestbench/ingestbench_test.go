package ingestbench

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/bench/internal/benchtest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSmoke runs the whole benchmark with tiny sizes, so that it keeps
// working: the real programs, both phases, the report.
func TestSmoke(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark reads Linux's /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := Config{
		Uploads: 20, Concurrency: 2, UploadSize: 4 << 10, Runs: 2,
		LargeSize: 2 << 20, SmallSize: 600 << 10, // both over the 512 KiB inline threshold
		DatabaseURL: benchtest.DatabaseURL(), Command: "smoke test", Progress: benchtest.LogWriter{T: t},
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	if len(rep.Throughput) != 2 {
		t.Fatalf("throughput runs: got %d, want 2", len(rep.Throughput))
	}
	for i, r := range rep.Throughput {
		if r.Uploads != 20 || r.Rate() <= 0 || r.AcceptElapsed <= 0 || r.Elapsed < r.AcceptElapsed {
			t.Errorf("run %d: got %d uploads in %v (accepted in %v), want 20 accepted before they all completed", i+1, r.Uploads, r.Elapsed, r.AcceptElapsed)
		}
		if r.Accept[0] <= 0 || r.Accept[0] > r.Accept[1] || r.Accept[1] > r.Accept[2] || r.Complete[0] < r.Accept[0] {
			t.Errorf("run %d: got accept latencies %v and completion latencies %v, want 0 < p50 <= p99 <= max", i+1, r.Accept, r.Complete)
		}
	}
	if len(rep.Memory) != 2 || rep.Memory[0].Size != cfg.SmallSize || rep.Memory[1].Size != cfg.LargeSize {
		t.Fatalf("memory runs: got %+v, want one of %d bytes and one of %d", rep.Memory, cfg.SmallSize, cfg.LargeSize)
	}
	for _, m := range rep.Memory {
		for _, name := range programs {
			if m.Peak[name] <= 0 || m.Peak[name] < m.Before[name] {
				t.Errorf("%d bytes, %s: got peak RSS %d from %d, want a positive peak no lower than the start", m.Size, name, m.Peak[name], m.Before[name])
			}
		}
		if m.Accepted <= 0 || m.Completed < m.Accepted {
			t.Errorf("%d bytes: accepted after %v, completed after %v", m.Size, m.Accepted, m.Completed)
		}
	}

	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", out.String())
	for _, want := range []string{"command   smoke test", "uploads/s end to end", "median", "spread", "600 KiB", "2 MiB", "ingest", "blobwriter", "< 64 MiB"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := Config{Uploads: 1, Concurrency: 1, UploadSize: 1, Runs: 1, LargeSize: 2, SmallSize: 1, DatabaseURL: "postgres://x"}
	if err := good.Validate(); err != nil {
		t.Errorf("got %v, want nil", err)
	}
	for name, mutate := range map[string]func(*Config){
		"nothing to measure": func(c *Config) { c.Runs, c.LargeSize = 0, 0 },
		"no uploads":         func(c *Config) { c.Uploads = 0 },
		"no clients":         func(c *Config) { c.Concurrency = 0 },
		"no small size":      func(c *Config) { c.SmallSize = 0 },
		"no database":        func(c *Config) { c.DatabaseURL = "" },
	} {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: got nil, want an error", name)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{4 << 10: "4 KiB", 1 << 30: "1 GiB", 600 << 10: "600 KiB", 3<<20 + 1: "3.0 MiB", 100: "100 B"} {
		if got := formatBytes(n); got != want {
			t.Errorf("%d: got %q, want %q", n, got, want)
		}
	}
}
