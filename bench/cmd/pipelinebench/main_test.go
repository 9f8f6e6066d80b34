package main

import (
	"bytes"
	"context"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/bench/internal/benchtest"
)

func TestByteSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"4096": 4096, "4KiB": 4 << 10, "1 GiB": 1 << 30, "2MiB": 2 << 20, "1MB": 1e6, "0": 0, "7B": 7} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q: got %d %v, want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "lots", "99999999999GiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("%q: got %d, want an error", in, b)
		}
	}
	for n, want := range map[byteSize]string{1 << 30: "1GiB", 4 << 10: "4KiB", 1500: "1500", 0: "0"} {
		if got := n.String(); got != want {
			t.Errorf("%d: got %q, want %q", n, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://db/x")
	dir := t.TempDir()
	cfg, out, timeout, err := parseFlags([]string{"-n", "20", "-size", "2MiB", "-env", "CONSUMER_CONCURRENCY=16",
		"-services-dir", dir, "-services-dir", "tree", "-clients", "1, 64", "-out", "r.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Uploads != 20 || !slices.Equal(cfg.Clients, []int{1, 64}) || cfg.AcceptClients != 64 || cfg.BulkUploads != 20000 ||
		cfg.Wait != 30 || !cfg.Floor || cfg.Runs != 3 || cfg.UploadSize != 4<<10 || cfg.LargeSize != 2<<20 || cfg.SmallSize != 1<<20 ||
		cfg.DatabaseURL != "postgres://db/x" || !slices.Equal(cfg.ServicesDirs, []string{dir, ""}) || out != "r.txt" || timeout <= 0 {
		t.Errorf("got %+v, out %q and timeout %v", cfg, out, timeout)
	}
	want := "pipelinebench -n 20 -clients 1,64 -accept-clients 64 -bulk-n 20000 -wait 30 -runs 3 -warmup 200 -check 50 -analyze true -floor true " +
		"-upload-size 4KiB -size 2MiB -small-size 1MiB -services-dir " + dir + " -services-dir tree -env CONSUMER_CONCURRENCY=16"
	if cfg.Command != want {
		t.Errorf("command: got %q, want %q", cfg.Command, want)
	}
	if cfg, _, _, err := parseFlags([]string{"-floor=false"}); err != nil || cfg.Floor || !strings.Contains(cfg.Command, " -floor false ") {
		t.Errorf("-floor=false: got floor %v in %q (%v), want false", cfg.Floor, cfg.Command, err)
	}
	for _, bad := range [][]string{
		{"-env", "NOVALUE"}, {"-runs", "0", "-size", "0"}, {"extra"}, {"-clients", "1,0"}, {"-clients", "x"},
		{"-services-dir", dir + "/missing"}, {"-clients", "", "-accept-clients", "0", "-bulk-n", "0"},
	} {
		if _, _, _, err := parseFlags(bad); err == nil || strings.Contains(err.Error(), "help") {
			t.Errorf("%q: got %v, want an error", bad, err)
		}
	}
}

// TestRunFloor runs the command with a round of the accept floor and the
// bulk path only, and finds the floor's section with figures in the
// report. It asserts no timing.
func TestRunFloor(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark reads Linux's /proc")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	var out bytes.Buffer
	code := run(ctx, []string{"-n", "300", "-clients", "", "-accept-clients", "0", "-bulk-n", "300", "-runs", "1", "-size", "0",
		"-warmup", "10", "-check", "5", "-database-url", benchtest.DatabaseURL(), "-work-dir", t.TempDir()}, &out, benchtest.LogWriter{T: t})
	t.Logf("report:\n%s", out.String())
	if code != 0 {
		t.Fatalf("got exit status %d, want 0", code)
	}
	for _, re := range []string{
		`-floor true`,
		`(?m)^HTTP accept floor \(httpfloor\), done at 202$`,
		// clients, accepted/s, p50, p99, httpfloor, nats-server, postgres, total, bench, other
		`(?m)^ +64 +\d+ +\d+\.\d +\d+\.\d +\d+ +\d+ +\d+ +\d+ +\d+ +\d+$`,
		`the counts of rows and messages, and 5 uploads' row and message`,
		`(?m)^  HTTP CPU floor per upload: bulk \d+ \+ accept floor \d+ = \d+ µs, \d+\.\d\d× bulk$`,
		`(?m)^  referenced ceiling: \d+ × 1e6 / \(HTTP CPU floor \d+ \+ clients \d+ µs\) = \d+ uploads/s$`,
		`(?m)^  accepted ceiling: \d+ × 1e6 / \(accept floor \d+ \+ bulk \d+ µs\) = \d+ uploads/s$`,
		`(?m)^    target ≥ 2400 uploads/s referenced at 64 clients: (within the ceiling|OUT OF REACH on this machine)$`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("report lacks a line matching %s", re)
		}
	}
}
