package throughput

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/bench/internal/benchtest"
	"github.com/blobref/blobref/bench/internal/floors"
	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/machine"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"

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

// TestPacedFloor checks the half-rate p99's floor: the median of the
// rounds, each capped at its round's paced run, and the verdict it gives.
func TestPacedFloor(t *testing.T) {
	t.Parallel()
	run := func(p99 int) RunResult {
		return RunResult{Phase: load.Phase{Result: load.Result{N: 10, Elapsed: time.Second, Latency: [3]time.Duration{time.Millisecond, time.Duration(p99) * time.Millisecond, time.Second}}}}
	}
	floor := func(p99 int) PacedFloorRun {
		return PacedFloorRun{Result: floors.Result{N: 10, Elapsed: time.Second, Latency: [3]time.Duration{time.Millisecond, time.Duration(p99) * time.Millisecond, time.Second}}}
	}
	for _, tc := range []struct {
		name         string
		paced        []RunResult
		floor        []PacedFloorRun
		want         time.Duration
		capped       int
		verdict, not string
	}{
		{"the floor under the target", []RunResult{run(150), run(160), run(170)}, []PacedFloorRun{floor(60), floor(70), floor(80)}, 70 * time.Millisecond, 0,
			"floor (p) at the same pace: p99 70.0 ms: within reach", "capped"},
		{"the floor over it", []RunResult{run(150), run(160), run(170)}, []PacedFloorRun{floor(110), floor(120), floor(130)}, 120 * time.Millisecond, 0,
			"floor (p) at the same pace: p99 120.0 ms: OUT OF REACH", "capped"},
		// Rounds 2 and 3's floors were slower than the pipeline beside
		// them: they count at the pipeline's 90 and 95 ms, and the median
		// falls under 100 (uncapped it would be 120).
		{"a floor over its run, capped", []RunResult{run(150), run(90), run(95)}, []PacedFloorRun{floor(120), floor(130), floor(110)}, 95 * time.Millisecond, 2,
			"floor (p) at the same pace: p99 95.0 ms (capped at the paced run's in 2 of 3 rounds): within reach", "OUT OF REACH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cr := ConfigResult{Name: File, Runs: []RunResult{run(100)}, Paced: tc.paced, PacedRate: 500, PacedFloor: tc.floor}
			got, capped := cr.pacedFloorP99()
			if got != tc.want || capped != tc.capped {
				t.Errorf("got %v capped in %d rounds, want %v in %d", got, capped, tc.want, tc.capped)
			}
			var out strings.Builder
			(&Report{Configs: []ConfigResult{cr}}).writeTargets(func(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) })
			if !strings.Contains(out.String(), tc.verdict) || strings.Contains(out.String(), tc.not) {
				t.Errorf("targets:\n%s\nwant %q and no %q", out.String(), tc.verdict, tc.not)
			}
		})
	}
	if _, capped := (ConfigResult{Paced: []RunResult{run(10)}}).pacedFloorP99(); capped != -1 {
		t.Errorf("without floor (p): got capped %d, want -1", capped)
	}
}

// TestFloorChecks builds a report of two rounds in which floor (b) cost
// more than blobwriter in round 1, and checks that the report flags it,
// caps it at blobwriter's cost for the ceiling, and says so.
func TestFloorChecks(t *testing.T) {
	t.Parallel()
	const n = 1000 // uploads: CPU in ms over the run is µs per upload
	ms := func(user, system int) procstat.Times {
		return procstat.Times{User: time.Duration(user) * time.Millisecond, System: time.Duration(system) * time.Millisecond}
	}
	floor := func(cpu map[string]procstat.Times) floors.Result {
		return floors.Result{N: n, Elapsed: time.Second, CPU: cpu}
	}
	// Floor (a) runs at 50,000 uploads/s, over what its CPU allows the
	// republish (40,000 events/s, below).
	floorA := func(cpu map[string]procstat.Times) floors.Result {
		return floors.Result{N: n, Elapsed: 20 * time.Millisecond, CPU: cpu}
	}
	phase := func(cpu map[string]procstat.Times) Phase {
		return Phase{
			Result: load.Result{N: n, Elapsed: time.Second, Latency: [3]time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}},
			Usage:  procstat.Usage{CPU: cpu},
		}
	}
	// The republish floors: (a) nats-server 30 µs, its client 20; (d)
	// Postgres 6, its client 3. The republish of round 1 costs nats-server
	// (25 µs) and the clients (12) less than the floors (30 and 23), which
	// count at the republish's cost there, and Postgres more (9 against 6):
	// 25 + 6 + 12 µs. Round 2's costs more but for Postgres (4 against 6):
	// 30 + 4 + 23 µs.
	republishes := []Phase{
		phase(map[string]procstat.Times{NATSServer: ms(25, 0), BlobWriter: ms(5, 0), RefWriter: ms(5, 0), Bench: ms(2, 0), Postgres: ms(9, 0)}),
		phase(map[string]procstat.Times{NATSServer: ms(40, 0), BlobWriter: ms(14, 0), RefWriter: ms(14, 0), Bench: ms(2, 0), Postgres: ms(4, 0)}),
	}
	round := 0
	run := func(blobwriter procstat.Times) RunResult {
		rp := republishes[round]
		round++
		return RunResult{Phase: phase(map[string]procstat.Times{
			BlobWriter: blobwriter, RefWriter: ms(40, 10), NATSServer: ms(40, 10), Postgres: ms(80, 10), Bench: ms(10, 0),
		}), Republish: &rp, Checked: pipeline.Checked{Uploads: 10, Objects: 10}}
	}
	rep := &Report{
		Config:  Config{Uploads: n, Size: 4096, Runs: 2, Configs: []string{File}, Concurrency: 8, Batch: 100, Window: 10},
		Machine: machine.Info{CPUs: 2},
		Floors: &FloorResults{
			JetStream: []floors.Result{floorA(map[string]procstat.Times{floors.NATSServer: ms(20, 10), floors.Bench: ms(15, 5)}), floorA(map[string]procstat.Times{floors.NATSServer: ms(20, 10), floors.Bench: ms(15, 5)})},
			Bucket:    map[string][]floors.Result{File: {floor(map[string]procstat.Times{floors.Bench: ms(100, 200)}), floor(map[string]procstat.Times{floors.Bench: ms(60, 40)})}},
			Postgres:  []floors.Result{floor(map[string]procstat.Times{floors.PostgresServer: ms(30, 10), floors.Bench: ms(10, 0)}), floor(map[string]procstat.Times{floors.PostgresServer: ms(30, 10), floors.Bench: ms(10, 0)})},
			Lookups:   []floors.Result{floor(map[string]procstat.Times{floors.PostgresServer: ms(5, 1), floors.Bench: ms(3, 0)}), floor(map[string]procstat.Times{floors.PostgresServer: ms(5, 1), floors.Bench: ms(3, 0)})},
		},
		Configs: []ConfigResult{{Name: File, Runs: []RunResult{run(ms(120, 30)), run(ms(120, 30))}}},
	}
	checks := rep.FloorChecks()
	if len(checks) != 6 {
		t.Fatalf("got %d checks, want 3 floors × 2 rounds", len(checks))
	}
	var above []string
	for _, c := range checks {
		if c.Above() {
			above = append(above, fmt.Sprintf("%s round %d: %v > %v", c.Spec.Name, c.Round, c.Floor, c.Stage))
		}
	}
	if want := []string{"(b) bucket round 1: 300µs > 150µs"}; !slices.Equal(above, want) {
		t.Errorf("floors above their stage: got %q, want %q", above, want)
	}
	b, capped := rep.HonestFloor(FloorSpecs[1], File)
	if b != 125*time.Microsecond || capped != 1 {
		t.Errorf("floor (b): got %v capped in %d rounds, want the median of 150µs (capped) and 100µs, 1 round", b, capped)
	}
	// 2 cores / (50 + 125 + 50 µs); uncapped it would be 2 / (50 + 200 + 50 µs).
	if got, want := rep.CeilingOf(File), 2/225e-6; math.Abs(got-want) > 1 {
		t.Errorf("ceiling: got %.0f, want %.0f", got, want)
	}

	// The median of 43 and 57 µs.
	if got, want := rep.RepublishFloor(File), 50*time.Microsecond; got != want {
		t.Errorf("republish floor: got %v, want %v", got, want)
	}
	if got, want := rep.RepublishCeiling(File), 2/50e-6; math.Abs(got-want) > 1 {
		t.Errorf("republish ceiling: got %.0f, want %.0f", got, want)
	}

	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", out.String())
	for _, want := range []string{
		"republish ceiling file:// = the lower of 2 cores / floors (a) + (d) 50 µs = 40000 events/s",
		"and floor (a)'s rate, 50000/s", "= 40000 events/s;\n  blobref republished 1000 events/s = 0.03 of it",
		"file:// republish ≥ 10000 events/s: 1000, MISS\n  republish ceiling 40000 events/s: within the ceiling",
		"(d) marker look-ups",
		"FLOOR ABOVE ITS STAGE", "(b) capped in 1 of 2 rounds", "= 8889 uploads/s", "1 of 6 above, MISS",
		"postgres (the benchmark's backends)", "checked after each run: 10 uploads' rows",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// User and system apart: floor (b)'s 100 + 200 and 60 + 40 µs.
	if !regexp.MustCompile(`\(b\) file:// bucket\s+bench\s+1000 \(1000–1000\)\s+80 \(60–100\)\s+120 \(40–200\)\s+200 \(100–300\)\n`).MatchString(out.String()) {
		t.Error("report lacks floor (b)'s user, system and total times")
	}

	// Floor (a) at 5,000 uploads/s: its rate is the republish ceiling, and
	// the 10,000 target is over it.
	for i := range rep.Floors.JetStream {
		rep.Floors.JetStream[i].Elapsed = 200 * time.Millisecond
	}
	if got := rep.RepublishCeiling(File); math.Abs(got-5000) > 1 {
		t.Errorf("republish ceiling at floor (a)'s rate: got %.0f, want 5000", got)
	}
	out.Reset()
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	if want := "republish ceiling 5000 events/s: OUT OF REACH on this machine"; !strings.Contains(out.String(), want) {
		t.Errorf("report lacks %q", want)
	}

	// Floor (a′), once the rounds measured it, stands in for (a): 8,000
	// uploads/s, nats-server 36 µs, its client 20. Round 1's republish caps
	// nats-server at 25, Postgres at (d)'s 6 and the clients at 12 (43 µs
	// again); round 2's leaves 36 + 4 (its Postgres) + 23 = 63 µs.
	floorAAgain := floors.Result{N: n, Elapsed: 125 * time.Millisecond, CPU: map[string]procstat.Times{floors.NATSServer: ms(30, 6), floors.Bench: ms(15, 5)}}
	rep.Floors.JetStreamAgain = []floors.Result{floorAAgain, floorAAgain}
	if got, want := rep.RepublishFloor(File), 53*time.Microsecond; got != want {
		t.Errorf("republish floor with (a′): got %v, want %v", got, want)
	}
	if got := rep.RepublishCeiling(File); math.Abs(got-8000) > 1 {
		t.Errorf("republish ceiling at floor (a′)'s rate: got %.0f, want 8000", got)
	}
	out.Reset()
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"(a′) the same uploads through (a) again",
		"the lower of 2 cores / floors (a′) + (d) 53 µs = 37736 events/s", "and floor (a′)'s rate, 8000/s",
		"republish ceiling 8000 events/s: OUT OF REACH on this machine",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if !regexp.MustCompile(`\(a′\) \(a\) again\s+nats-server\s+8000 \(8000–8000\)\s+30 \(30–30\)\s+6 \(6–6\)\s+36 \(36–36\)\n`).MatchString(out.String()) {
		t.Errorf("report lacks floor (a′)'s row:\n%s", out.String())
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
		Warmup: 20, Check: 30, Window: 256, Concurrency: 4, Batch: 50,
		DatabaseURL: benchtest.DatabaseURL(), WorkDir: t.TempDir(), Command: "smoke test", Progress: benchtest.LogWriter{T: t},
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(rep.Configs) != 2 || len(rep.Configs[0].Runs) != 1 || len(rep.Configs[0].Paced) != 1 || rep.Configs[0].Runs[0].Republish == nil {
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
	if len(f.JetStream) != 1 || len(f.JetStreamAgain) != 1 || len(f.Bucket[File]) != 1 || len(f.Postgres) != 1 || len(f.Lookups) != 1 || f.JetStream[0].Rate() <= 0 || f.JetStreamAgain[0].Rate() <= 0 {
		t.Errorf("got floors %+v, want one run of each", f)
	}
	for _, c := range rep.Configs {
		if len(c.PacedFloor) != 1 {
			t.Errorf("%s://: got %d runs of floor (p), want 1", c.Name, len(c.PacedFloor))
			continue
		}
		f := c.PacedFloor[0]
		if f.N != 300 || f.Latency[0] <= 0 || f.Latency[0] > f.Latency[1] || f.Latency[1] > f.Latency[2] {
			t.Errorf("%s://: got floor (p) %+v, want 300 uploads with 0 < p50 <= p99 <= max", c.Name, f)
		} else if _, ok := f.CPU[floors.PostgresServer]; !ok {
			t.Errorf("%s://: floor (p) has no CPU figure for Postgres", c.Name)
		}
		// Every upload's three events read back from the stream, for the
		// paced run and for the floor: legs that are positive and ordered.
		for what, l := range map[string]load.Legs{"paced run": c.Paced[0].Legs, "floor (p)": f.Legs} {
			if l.N != 300 || l.Store[0] <= 0 || l.Ref[0] <= 0 || l.Store[0] > l.Store[1] || l.Ref[1] > l.Ref[2] {
				t.Errorf("%s://: %s: got legs %+v, want 300 uploads' with 0 < p50 <= p99 <= max", c.Name, what, l)
			}
		}
	}
	if rep.CeilingOf(File) <= 0 {
		t.Error("got no ceiling for file://")
	}
	if ck := rep.Configs[0].Runs[0].Checked; ck != (pipeline.Checked{Uploads: 30, Objects: 30}) {
		t.Errorf("file://: checked %+v, want 30 uploads' rows and objects", ck)
	}
	if ck := rep.Configs[1].Runs[0].Checked; ck != (pipeline.Checked{Uploads: 30}) {
		t.Errorf("mem://: checked %+v, want 30 uploads' rows and no objects", ck)
	}
	// /proc counts CPU in clock ticks (10 ms): over 300 uploads one process
	// may spend less than a tick, but not all of them together.
	var total time.Duration
	for _, name := range []string{NATSServer, Postgres, BlobWriter} {
		total += r.Per(name).Total()
	}
	if total <= 0 {
		t.Error("nats-server, postgres and blobwriter: got no CPU per upload")
	}

	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", out.String())
	for _, want := range []string{
		"command   smoke test", "uploads/s end to end", "latency publish→completed p99", "CPU µs per upload by process",
		"postgres (the benchmark's backends)", "peak RSS refwriter", "republish (every step skipped)", "republish CPU µs/event: nats-server",
		"paced latency p99", "floor (p) latency p99", "paced CPU µs per upload, every process", "floor (p) CPU µs per upload", "paced store leg (requested → blob_stored) p50", "floor (p) ref leg (blob_stored → completed) p99", "floor (p) at the same pace: p99", "(a) JetStream", "(a′) (a) again", "(b) file:// bucket", "(c) Postgres rows", "floors against their stages", "ceiling file:// = ", "of the ceiling",
		"checked after each run: 30 uploads' rows", "every floor at or below its stage",
		"clients together", "memory under a backlog", "== targets", "file:// ≥ 6000 uploads/s", "republish ≥ 10000",
		"RSS ≤ 64 MiB with 500 pending", "== mem:// pipeline", "mem:// ≥ 0.5 of floor (a)", "republish ceiling file:// = ",
		"republish ceiling mem:// = ", "(d) marker look-ups",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
