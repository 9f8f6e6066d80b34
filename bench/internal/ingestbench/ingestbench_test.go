package ingestbench

import (
	"bytes"
	"context"
	"maps"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/bench/internal/benchtest"
	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/machine"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSmoke runs the whole benchmark with tiny sizes, so that it keeps
// working: the real programs, every phase, the checks, the report. It
// asserts no timing.
func TestSmoke(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark reads Linux's /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := Config{
		Uploads: 20, Clients: []int{1, 4}, AcceptClients: 4, BulkUploads: 100, UploadSize: 4 << 10, Wait: 30,
		Runs: 1, Warmup: 5, Check: 5, Analyze: true, Floor: true, LatencyFloor: true,
		LargeSize: 2 << 20, SmallSize: 600 << 10, // both over the 512 KiB inline threshold
		DatabaseURL: benchtest.DatabaseURL(), WorkDir: t.TempDir(), Command: "smoke test", Progress: benchtest.LogWriter{T: t},
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(rep.Variants) != 1 || rep.Variants[0].Name != "tree" || len(rep.Variants[0].Rounds) != 1 {
		t.Fatalf("got %+v, want one variant, this tree, with one round", rep.Variants)
	}
	v := rep.Variants[0]
	rd := v.Rounds[0]
	if len(rd.Levels) != 2 || rd.Accept == nil || rd.Bulk == nil || rd.Floor == nil || rd.Chain == nil {
		t.Fatalf("got %+v, want two HTTP phases, accept only, bulk, the accept floor and the latency floor", rd)
	}
	// The latency floor: one client, every upload answered 201 once, its
	// legs read from its own stream, and CPU read for its three programs.
	if c := rd.Chain; c.N != 20 || c.Clients != 1 || c.Requests != c.N || c.Latency[0] <= 0 || c.Latency[0] > c.Latency[1] ||
		c.Checked != (pipeline.Checked{Uploads: 5, Objects: 5}) || c.Stages.N != 20 || slices.Min(c.Stages.Legs[:]) <= 0 ||
		slices.Max(c.Stages.Legs[:]) > c.Latency[2] || perUpload(c.Usage, c.N, chainCosted) <= 0 {
		t.Errorf("latency floor: got %d uploads from %d clients in %d requests, latencies %v, checked %+v, legs %v of %d, CPU %v;"+
			" want 20 from 1 in 20, 0 < p50 <= p99, 5 objects checked, 20 uploads' legs each positive and at most the slowest, CPU",
			c.N, c.Clients, c.Requests, c.Latency, c.Checked, c.Stages.Legs, c.Stages.N, perUpload(c.Usage, c.N, chainCosted))
	}
	for _, name := range chainPrograms {
		if _, ok := rd.Chain.Usage.Parts[pipeline.Postgres][name]; !ok {
			t.Errorf("latency floor: no Postgres CPU read for %s's connections (got parts %v)", name, rd.Chain.Usage.Parts)
		}
	}
	// The floor's CPU over 20 uploads may be under a clock tick: TestRunFloor
	// of the command checks its figures over more.
	if f := rd.Floor; f.N != 20 || f.Clients != 4 || f.Rate() <= 0 || f.Requests != f.N || f.Latency[0] <= 0 || f.Latency[0] > f.Latency[1] ||
		f.Checked != (pipeline.Checked{Uploads: 5, Objects: 5}) || f.Peak[pipeline.HTTPFloor] <= 0 {
		t.Errorf("accept floor: got %d uploads from %d clients at %.0f/s in %d requests, latencies %v, checked %+v, peak RSS %d;"+
			" want 20 from 4 in 20, 0 < p50 <= p99, 5 rows and messages checked, a peak RSS",
			f.N, f.Clients, f.Rate(), f.Requests, f.Latency, f.Checked, f.Peak[pipeline.HTTPFloor])
	}
	for _, l := range rd.Levels {
		// All 20 uploads sampled; each leg took time, and none longer
		// than the slowest upload took in all.
		if l.Stages.N != 20 || slices.Min(l.Stages.Legs[:]) <= 0 || slices.Max(l.Stages.Legs[:]) > l.Latency[2] {
			t.Errorf("%d clients: got legs %v of %d uploads; want 20 uploads, each leg positive and at most the slowest upload's %v",
				l.Clients, l.Stages.Legs, l.Stages.N, l.Latency[2])
		}
	}
	for _, l := range append(rd.Levels, *rd.Accept) {
		if l.N != 20 || l.Rate() <= 0 || l.Requests < l.N || l.Latency[0] <= 0 || l.Latency[0] > l.Latency[1] || l.Latency[1] > l.Latency[2] {
			t.Errorf("%d clients: got %d uploads at %.0f/s in %d requests, latencies %v; want 20 in at least 20, 0 < p50 <= p99 <= max",
				l.Clients, l.N, l.Rate(), l.Requests, l.Latency)
		}
		// /proc counts CPU in clock ticks (10 ms): over 20 small uploads one
		// process may spend less than a tick, but all of them together
		// cannot (package procstat tests the reading itself).
		var total float64
		for _, name := range costed {
			if c := l.Per(name).Total(); c < 0 {
				t.Errorf("%d clients: negative CPU for %s", l.Clients, name)
			} else {
				total += float64(c)
			}
		}
		if total <= 0 {
			t.Errorf("%d clients: no CPU for any process", l.Clients)
		}
		if _, ok := l.Usage.Parts[pipeline.Postgres][pipeline.Ingest]; !ok {
			t.Errorf("%d clients: no Postgres CPU read for ingest's connections (got parts %v)", l.Clients, l.Usage.Parts)
		}
		if l.Peak[pipeline.Ingest] <= 0 {
			t.Errorf("%d clients: no peak RSS for ingest", l.Clients)
		}
		if l.WALPer() < 4<<10 { // each upload's 4 KiB passes through ingest's record
			t.Errorf("%d clients: %.0f bytes of WAL per upload, want at least the upload's 4 KiB", l.Clients, l.WALPer())
		}
		if l.Checked != (pipeline.Checked{Uploads: 5, Objects: 5}) {
			t.Errorf("%d clients: checked %+v, want 5 uploads' rows and objects", l.Clients, l.Checked)
		}
	}
	// An upload may complete before its own 202 reaches the client: the
	// pipeline runs on while ingest records the publish and answers. What
	// must hold is that the last completion follows the start of the
	// request answered last, which began at least its latency before the
	// last 202 (Latency[2] is the longest).
	if a := rd.Accept; a.Completed <= 0 || a.Completed < a.Elapsed-a.Latency[2] {
		t.Errorf("accept only: completed after %v, accepted after %v with requests of up to %v; want the last completion after the last request began",
			a.Completed, a.Elapsed, a.Latency[2])
	}
	if b := rd.Bulk; b.N != 100 || cost(b.Usage, b.N) <= 0 {
		t.Errorf("bulk: got %d uploads costing %v; want 100 with CPU", b.N, cost(b.Usage, b.N))
	}
	// Every phase ran batches of at least one message in each service that
	// had work in it: the bulk phase's requests bypass ingest's API.
	for _, l := range append(rd.Levels, *rd.Accept) {
		for _, h := range batchHistograms {
			if l.Batches[h.service] < 1 {
				t.Errorf("%d clients: %s's mean batch %v, want at least 1 (got %v)", l.Clients, h.service, l.Batches[h.service], l.Batches)
			}
		}
	}
	if b := rd.BulkBatches; b[pipeline.BlobWriter] < 1 || b[pipeline.RefWriter] < 1 || len(b) != 2 {
		t.Errorf("bulk: mean batches %v, want blobwriter's and refwriter's, each at least 1, and none for ingest", b)
	}
	// ingest runs in the bulk phase, as deployed: its read model folds in
	// the bulk path's events, and its connections are metered.
	if _, ok := rd.Bulk.Usage.Parts[pipeline.Postgres][pipeline.Ingest]; !ok {
		t.Errorf("bulk: no Postgres CPU read for ingest's connections (got parts %v)", rd.Bulk.Usage.Parts)
	}
	// 4 phases of 5 and the large upload.
	if v.Checked.Uploads != 20 || v.Checked.Objects != 20 {
		t.Errorf("checked %+v in all, want 20 uploads' rows and objects", v.Checked)
	}
	if len(v.Memory) != 2 || v.Memory[0].Size != cfg.SmallSize || v.Memory[1].Size != cfg.LargeSize {
		t.Fatalf("memory runs: got %+v, want one of %d bytes and one of %d", v.Memory, cfg.SmallSize, cfg.LargeSize)
	}
	for _, m := range v.Memory {
		for _, name := range programs {
			if m.Peak[name] <= 0 || m.Peak[name] < m.Before[name] {
				t.Errorf("%d bytes, %s: got peak RSS %d from %d, want a positive peak no lower than the start", m.Size, name, m.Peak[name], m.Before[name])
			}
		}
		// Either may come first: the completed event can reach the tracker
		// before the client has read ingest's 202.
		if m.Accepted <= 0 || m.Completed <= 0 {
			t.Errorf("%d bytes: accepted after %v, completed after %v", m.Size, m.Accepted, m.Completed)
		}
	}

	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", out.String())
	for _, want := range []string{
		"command   smoke test", "HTTP path: 20 uploads of 4 KiB", "Accept only: 20 uploads from 4 clients", "CPU µs per upload by process",
		"HTTP, 1 client", "HTTP, 4 clients", "accept only, 4 clients", "bulk, JetStream", "checked after the phases: 20 uploads",
		"600 KiB", "2 MiB", "< 64 MiB", "1 client, p50 request → 201",
		"HTTP accept floor: the least any HTTP front door does", "HTTP accept floor (httpfloor), done at 202",
		"and 5 uploads' row and message (sha256 of the bytes): all whole",
		"Latency floor: the least a chain of three processes does", "Latency floor (chainfloor), 1 client, done at 201",
		"every upload's row, reference and two markers, and 5 objects", "1 client's p50 over the latency floor's",
		"legs at 1 client, ms", "the latency floor's p50 in the same rounds", "Mean messages per batch, by service",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestReport builds a report of two variants over two rounds and checks
// the figures it derives: the CPU per upload, its ratio to the bulk path's,
// the targets and the side-by-side comparison.
func TestReport(t *testing.T) {
	t.Parallel()
	const n = 1000 // uploads: CPU in ms over a phase is µs per upload
	ms := func(d int) procstat.Times { return procstat.Times{User: time.Duration(d) * time.Millisecond} }
	usage := func(ingest, blobwriter, refwriter, nats, postgres int) procstat.Usage {
		u := procstat.Usage{CPU: map[string]procstat.Times{
			pipeline.BlobWriter: ms(blobwriter), pipeline.RefWriter: ms(refwriter), pipeline.NATSServer: ms(nats),
			pipeline.Postgres: ms(postgres), pipeline.Bench: ms(50),
		}, Other: 10 * time.Millisecond}
		// Postgres's backends: 3/10 refwriter's, the rest blobwriter's, or
		// 6/10 ingest's when it runs.
		parts := map[string]procstat.Times{pipeline.RefWriter: ms(postgres * 3 / 10), pipeline.BlobWriter: ms(postgres * 7 / 10)}
		if ingest >= 0 {
			u.CPU[pipeline.Ingest] = ms(ingest)
			parts[pipeline.Ingest], parts[pipeline.BlobWriter] = ms(postgres*6/10), ms(postgres/10)
		}
		u.Parts = map[string]map[string]procstat.Times{pipeline.Postgres: parts}
		return u
	}
	// metered is u on a machine busy with its processes and other work
	// alone.
	metered := func(u procstat.Usage) procstat.Usage {
		u.Machine = u.Other
		for _, t := range u.CPU {
			u.Machine += t.Total()
		}
		return u
	}
	level := func(clients int, elapsed, p50 time.Duration, u procstat.Usage, ingestRSS, walPer int64) Level {
		u = metered(u)
		// Legs of p50/10, 3p50/10, 4p50/10 and p50/5.
		legs := [4]time.Duration{p50 / 10, 3 * p50 / 10, 4 * p50 / 10, p50 / 5}
		return Level{Clients: clients, N: n, Elapsed: elapsed, Latency: [3]time.Duration{p50, 2 * p50, 3 * p50}, Requests: n + n/10,
			Usage: u, Peak: map[string]int64{pipeline.Ingest: ingestRSS}, WAL: walPer * int64(n), Stages: Stages{N: 200, Legs: legs}}
	}
	bulk := &load.Phase{Result: load.Result{N: n, Elapsed: time.Second}, Usage: usage(-1, 150, 100, 50, 100)} // 400 µs
	// The accept floor: 300 µs (httpfloor 100, nats-server 50, postgres
	// 150), its clients 50 µs.
	floor := &Level{Clients: 64, N: n, Elapsed: 250 * time.Millisecond, Latency: [3]time.Duration{5 * time.Millisecond, 9 * time.Millisecond, 12 * time.Millisecond},
		Requests: n, Usage: procstat.Usage{CPU: map[string]procstat.Times{
			pipeline.HTTPFloor: ms(100), pipeline.NATSServer: ms(50), pipeline.Postgres: ms(150), pipeline.Bench: ms(50),
		}, Other: 20 * time.Millisecond}, Checked: pipeline.Checked{Uploads: 5, Objects: 5}}
	// The latency floor: p50 5 ms, 500 µs (its programs 100, 150 and 100,
	// nats-server 100, postgres 50).
	chain := &Level{Clients: 1, N: n, Elapsed: 5 * time.Second, Latency: [3]time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 15 * time.Millisecond},
		Requests: n, Usage: procstat.Usage{CPU: map[string]procstat.Times{
			pipeline.ChainRef: ms(100), pipeline.ChainStore: ms(150), pipeline.ChainFront: ms(100), pipeline.NATSServer: ms(100),
			pipeline.Postgres: ms(50), pipeline.Bench: ms(50),
		}, Other: 10 * time.Millisecond}, Checked: pipeline.Checked{Uploads: 5, Objects: 5},
		Stages: Stages{N: 200, Legs: [4]time.Duration{500 * time.Microsecond, 1500 * time.Microsecond, 2 * time.Millisecond, time.Millisecond}}}
	old := &Variant{Name: "old-76e415e", Source: "prebuilt", Checked: pipeline.Checked{Uploads: 10, Objects: 10}}
	tree := &Variant{Name: "tree", Source: "this tree", Checked: pipeline.Checked{Uploads: 10, Objects: 10}}
	for range 2 {
		old.Rounds = append(old.Rounds, Round{
			Levels: []Level{
				level(1, 10*time.Second, 10*time.Millisecond, usage(1000, 900, 300, 400, 900), 30<<20, 12000),
				level(64, 2*time.Second, 100*time.Millisecond, usage(1000, 900, 300, 400, 900), 40<<20, 12000), // 3500 µs, 500/s
				level(256, 2*time.Second, 400*time.Millisecond, usage(1000, 900, 300, 400, 900), 80<<20, 12000),
			},
			Accept: &Level{Clients: 64, N: n, Elapsed: 1500 * time.Millisecond, Completed: 2 * time.Second, Requests: n, Usage: metered(usage(500, 900, 300, 400, 900))},
			Bulk:   bulk,
			Floor:  floor,
			Chain:  chain,
		})
		tree.Rounds = append(tree.Rounds, Round{
			Levels: []Level{
				level(1, 3*time.Second, 3*time.Millisecond, usage(200, 200, 100, 100, 100), 20<<20, 9000),
				level(64, 400*time.Millisecond, 20*time.Millisecond, usage(200, 200, 100, 100, 100), 30<<20, 9000), // 700 µs, 2500/s
				level(256, 400*time.Millisecond, 80*time.Millisecond, usage(200, 200, 100, 100, 100), 50<<20, 9000),
			},
			Accept: &Level{Clients: 64, N: n, Elapsed: 200 * time.Millisecond, Completed: 500 * time.Millisecond, Requests: n, Usage: metered(usage(100, 200, 100, 100, 100))},
			Bulk:   bulk,
			Floor:  floor,
			Chain:  chain,
		})
	}
	rep := &Report{
		Config:   Config{Uploads: n, Clients: []int{1, 64, 256}, AcceptClients: 64, BulkUploads: n, UploadSize: 4 << 10, Wait: 30, Runs: 2, Floor: true, LatencyFloor: true, Command: "test"},
		Machine:  machine.Info{CPUs: 2},
		Variants: []*Variant{old, tree},
	}
	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Logf("report:\n%s", text)
	old64 := regexp.MustCompile(`(?m)^ +HTTP, 64 clients +1000 +900 +300 +400 +900 +3500 ±0% +8\.75 ±0% +50 +10$`)
	tree64 := regexp.MustCompile(`(?m)^ +HTTP, 64 clients +200 +200 +100 +100 +100 +700 ±0% +1\.75 ±0% +50 +10$`)
	bulkRow := regexp.MustCompile(`(?m)^ +bulk, JetStream +- +150 +100 +50 +100 +400 ±0% +1\.00 ±0% +50 +10$`)
	for name, re := range map[string]*regexp.Regexp{"old at 64 clients": old64, "tree at 64 clients": tree64, "bulk": bulkRow} {
		if !re.MatchString(text) {
			t.Errorf("CPU table: no row for %s matching %s", name, re)
		}
	}
	for _, want := range []string{
		"HTTP CPU per upload at 64 clients ≤ 2× the bulk path's: 8.75×, MISS",
		"HTTP CPU per upload at 64 clients ≤ 2× the bulk path's: 1.75×, pass",
		// The machine over the 64-client phases: old 3,560 µs per upload
		// (its processes, the clients' 50 and other work's 10) at 500/s,
		// tree 760 at 2,500/s; 2 CPUs leave 2e6 / 2400 µs at the target.
		"64 clients with Prefer: wait ≥ 2400 uploads/s referenced: 500, MISS\n" +
			"    the machine: 3560 µs of CPU per upload in all, 1.78 of its 2 CPUs at that rate; at 2400/s they leave 833 µs\n",
		"64 clients with Prefer: wait ≥ 2400 uploads/s referenced: 2500, pass\n" +
			"    the machine: 760 µs of CPU per upload in all, 1.90 of its 2 CPUs at that rate; at 2400/s they leave 833 µs\n",
		"1 client, p50 request → 201 ≤ 4ms: 10.0 ms, MISS", "1 client, p50 request → 201 ≤ 4ms: 3.0 ms, pass",
		// Accept only, metered until the last completion: old 3,060 µs
		// per upload at 667/s, tree 660 at 5,000/s (more than 2 CPUs: the
		// pipeline finished after the last 202).
		"accept only, 64 clients ≥ 4000 uploads/s accepted: 667, MISS\n" +
			"    the machine: 3060 µs of CPU per upload in all, 2.04 of its 2 CPUs at that rate; at 4000/s they leave 500 µs\n",
		"accept only, 64 clients ≥ 4000 uploads/s accepted: 5000, pass\n" +
			"    the machine: 660 µs of CPU per upload in all, 3.30 of its 2 CPUs at that rate; at 4000/s they leave 500 µs\n",
		"ingest RSS ≤ 64 MiB at 256 clients: peak 80.0 MiB, MISS", "ingest RSS ≤ 64 MiB at 256 clients: peak 50.0 MiB, pass",
		"tree / old-76e415e: the last variant's figure over the first's\nThe floors run the same programs in every variant's turn",
		// 2 CPUs; bulk 400 µs + floor 300 = 700, 1.75×; 2e6 / (700 + 50) and 2e6 / (300 + 400).
		"  HTTP CPU floor per upload: bulk 400 + accept floor 300 = 700 µs, 1.75× bulk\n" +
			"    target HTTP CPU ≤ 2× the bulk path's: within reach (the floor is under it); measured 8.75×\n" +
			"  referenced ceiling: 2 × 1e6 / (HTTP CPU floor 700 + clients 50 µs) = 2667 uploads/s\n" +
			"    target ≥ 2400 uploads/s referenced at 64 clients: within the ceiling; measured 500/s\n" +
			"  accepted ceiling: 2 × 1e6 / (accept floor 300 + bulk 400 µs) = 2857 uploads/s\n" +
			"    target ≥ 4000 uploads/s accepted at 64 clients: OUT OF REACH on this machine; measured 667/s\n",
		"ceilings on this machine (2 CPUs), from each round's accept floor and bulk phase (the median of 2 rounds,",
		"1 client's p50 over the latency floor's: 10.0 / 5.0 ms = 2.00", "1 client's p50 over the latency floor's: 3.0 / 5.0 ms = 0.60",
		"the latency floor's p50 in the same rounds: 5.0 ms: OUT OF REACH on this machine (the floor alone is over it)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, re := range []string{
		`(?m)^ +64 +500 ±0% +100\.0 ±0% +200\.0 ±0% +0\.10 ±0% +40\.0 ±0% +12000 ±0%$`, // old's HTTP table at 64 clients
		`(?m)^ +HTTP, 64 clients: WAL bytes/upload +12000 +9000 +0\.75$`,
		`(?m)^ +HTTP, 64 clients: uploads/s +500 +2500 +5\.00$`,
		// Postgres by service: old's and tree's 64 clients, and bulk without ingest.
		`(?m)^ +HTTP, 64 clients +540 +90 +270$`, `(?m)^ +HTTP, 64 clients +60 +10 +30$`, `(?m)^ +bulk, JetStream +- +70 +30$`,
		`(?m)^ +HTTP, 64 clients: CPU µs/upload +3500 +700 +0\.20$`,
		`(?m)^ +HTTP, 64 clients: CPU × bulk +8\.75 +1\.75 +0\.20$`,
		`(?m)^ +ingest peak RSS at 256 clients, MiB +80\.0 +50\.0 +0\.62$`,
		`(?m)^ +64 +4000 ±0% +5\.0 ±0% +9\.0 ±0% +100 +50 +150 +300 ±0% +50 +20$`, // the floor's table
		`(?m)^ +accept floor, 64 clients: accepted/s +4000 +4000 +1\.00$`,
		`(?m)^ +referenced ceiling, uploads/s +2667 +2667 +1\.00$`,
		// Where the time goes: tree's 64 clients (p50 20 ms), and one
		// client's blobwriter leg side by side (3 of old's 10 ms, of tree's 3).
		`(?m)^ +64 +2\.00 ±0% +6\.00 ±0% +8\.00 ±0% +4\.00 ±0% +200 ±0%$`,
		`(?m)^ +HTTP, 1 client, ms: blobwriter → blob_stored +3\.00 +0\.90 +0\.30$`,
		// The latency floor side by side: the same in both turns, and
		// each variant's 1-client p50 over it (10 and 3 ms over 5).
		`(?m)^ +latency floor, 1 client: p50 ms +5\.0 +5\.0 +1\.00$`,
		`(?m)^ +HTTP, 1 client: p50 over the latency floor's +2\.00 +0\.60 +0\.30$`,
		// The latency floor's table, and tree's blobwriter leg beside the
		// floor's store leg.
		`(?m)^ +1 +200 ±0% +5\.0 ±0% +10\.0 ±0% +100 +150 +100 +100 +50 +500 ±0% +50 +10$`,
		`(?m)^ +blobwriter → blob_stored +0\.90 +1\.50 +-0\.60$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("report lacks a line matching %s", re)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := Config{Uploads: 1, Clients: []int{1}, UploadSize: 1, Wait: 1, Runs: 1, LargeSize: 2, SmallSize: 1, DatabaseURL: "postgres://x", WorkDir: "/tmp"}
	if err := good.Validate(); err != nil {
		t.Errorf("got %v, want nil", err)
	}
	for name, mutate := range map[string]func(*Config){
		"nothing to measure": func(c *Config) { c.Runs, c.LargeSize = 0, 0 },
		"no uploads":         func(c *Config) { c.Uploads = 0 },
		"no phases":          func(c *Config) { c.Clients = nil },
		"zero clients":       func(c *Config) { c.Clients = []int{0} },
		"no wait":            func(c *Config) { c.Wait = 0 },
		"no small size":      func(c *Config) { c.SmallSize = 0 },
		"no database":        func(c *Config) { c.DatabaseURL = "" },
		"no work dir":        func(c *Config) { c.WorkDir = "" },
		"negative check":     func(c *Config) { c.Check = -1 },
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

// TestMeanBatches reads batch histograms as the services serve them and
// takes a phase's mean batch from two readings.
func TestMeanBatches(t *testing.T) {
	t.Parallel()
	const text = `# TYPE blobref_step_batch_messages histogram
blobref_step_batch_messages_bucket{step="blob",le="+Inf"} 4
blobref_step_batch_messages_sum{step="blob"} 40
blobref_step_batch_messages_count{step="blob"} 4
blobref_step_batch_messages_bucket{step="ref",le="+Inf"} 2
blobref_step_batch_messages_sum{step="ref"} 6
blobref_step_batch_messages_count{step="ref"} 2
`
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	f := families["blobref_step_batch_messages"]
	if got, ok := tallyOf(f, "ref"); !ok || got != (batchTally{sum: 6, count: 2}) {
		t.Errorf("ref: got %+v, %v; want sum 6, count 2", got, ok)
	}
	if _, ok := tallyOf(f, "notify"); ok {
		t.Error("a step without a series: got a tally")
	}
	if _, ok := tallyOf(families["blobref_ingest_batch_size"], ""); ok {
		t.Error("a histogram not served: got a tally")
	}
	before := map[string]batchTally{pipeline.BlobWriter: {sum: 40, count: 4}, pipeline.RefWriter: {sum: 6, count: 2}}
	after := map[string]batchTally{pipeline.BlobWriter: {sum: 140, count: 8}, pipeline.RefWriter: {sum: 6, count: 2}, pipeline.Ingest: {sum: 30, count: 3}}
	got := meanBatches(before, after)
	// blobwriter: 100 messages in 4 batches; refwriter ran none; ingest's
	// first reading had none.
	if want := map[string]float64{pipeline.BlobWriter: 25, pipeline.Ingest: 10}; !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
