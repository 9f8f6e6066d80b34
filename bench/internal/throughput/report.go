package throughput

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/blobref/blobref/bench/internal/floors"
	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/bench/internal/texttable"
)

// Issue 6's targets.
const (
	TargetFileRate      = 6000 // uploads/s end to end, file://
	TargetFileCeiling   = 0.7  // of the ceiling, file://
	TargetMemOfFloorA   = 0.5  // of floor (a)'s rate, mem://
	TargetPacedP99      = 100 * time.Millisecond
	TargetRepublishRate = 10000 // events/s
	TargetBacklogRSS    = 64 << 20
)

// summary is a figure's median and range as "median (min–max)".
func summary(values []float64, format string) string {
	return stats.Summarize(values).Range(format)
}

func collect[T, U any](xs []T, f func(T) U) []U {
	out := make([]U, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

func ms(d time.Duration) float64 { return stats.Millis(d) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Write prints the report as plain text.
func (r *Report) Write(w io.Writer) error {
	ew := &texttable.ErrWriter{W: w}
	line := func(format string, args ...any) { fmt.Fprintf(ew, format+"\n", args...) }
	c := r.Config
	line("blobref throughput benchmark (issues 6 and 10): request events through blobwriter and refwriter")
	line("")
	line("command   %s", c.Command)
	line("machine   %s", r.Machine)
	if c.ServicesDir != "" {
		line("services  %s", r.Source)
	} else {
		line("tree      %s", r.Source)
	}
	line("pipeline  nats-server %s (its own process, a fresh store per run), PostgreSQL %s (a fresh schema per run),", r.NATSVersion, r.PostgresVersion)
	built := "without -race"
	if r.GoFlags != "" {
		built += ", GOFLAGS=" + r.GoFlags
	}
	line("          blobwriter and refwriter as separate processes built by %s %s", r.GoVersion, built)
	settings := "their defaults"
	if len(c.Env) > 0 {
		settings += ", except " + strings.Join(c.Env, " ")
	}
	line("settings  %s; producer window %d; floors at concurrency %d, batches of %d", settings, c.Window, c.Concurrency, c.Batch)
	line("data      %s (one fresh directory per run, nothing deleted); TMPDIR %s for the services and the floors", r.Dir, r.TempDir)
	line("wall time %s", r.Wall.Round(time.Second))
	line("rounds    %d, each: the floors, then one run of each configuration (%s)", c.Runs, strings.Join(c.Configs, ", "))
	if c.Paced {
		line("paced     then %d paced rounds, each: every configuration at half its median rate and floor (p) at that pace,", c.Runs)
		line("          the pipeline first in odd rounds and the floor first in even ones")
	}
	line("figures   median (min–max) of the rounds, %d uploads of %d bytes each, unless noted", c.Uploads, c.Size)
	line("CPU       user and system time from /proc/<pid>/stat over a run, per upload; postgres is the backends of the")
	line("          benchmark's own connections only (pg_stat_activity by application_name), not the whole server")

	for _, cr := range r.Configs {
		line("")
		r.writeConfig(line, ew, cr)
	}
	if r.Floors != nil {
		line("")
		r.writeFloors(line, ew)
	}
	if r.Backlog != nil {
		line("")
		r.writeBacklog(line, ew)
	}
	line("")
	r.writeTargets(line)
	return ew.Err()
}

func (r *Report) writeConfig(line func(string, ...any), w io.Writer, cr ConfigResult) {
	line("== %s:// pipeline ==", cr.Name)
	if cr.Name == Mem {
		line("blobwriter BLOB_URL=mem://; refwriter BLOB_CHECK=false (its mem:// bucket could not see blobwriter's)")
	}
	if cr.Err != nil {
		line("FAILED: %v", cr.Err)
	}
	if len(cr.Runs) == 0 {
		return
	}
	line("producer: PublishMsgAsync as fast as JetStream accepts; end to end = first publish → last uploads.completed")
	var t texttable.Table
	t.Row("figure", "median (min–max)")
	t.Row("uploads/s end to end", summary(collect(cr.Runs, func(x RunResult) float64 { return x.Rate() }), "%.0f"))
	for i, name := range []string{"p50", "p99", "max"} {
		t.Row("latency publish→completed "+name+", ms", summary(collect(cr.Runs, func(x RunResult) float64 { return ms(x.Latency[i]) }), "%.0f"))
	}
	for _, name := range []string{BlobWriter, RefWriter, NATSServer} {
		t.Row("peak RSS "+name+", MiB", summary(collect(cr.Runs, func(x RunResult) float64 { return procstat.MiB(x.Peak[name]) }), "%.1f"))
	}
	if cr.Runs[0].Republish != nil {
		t.Row("republish (every step skipped), events/s", summary(collect(cr.Runs, func(x RunResult) float64 { return x.Republish.Rate() }), "%.0f"))
		t.Row("republish latency p99, ms", summary(collect(cr.Runs, func(x RunResult) float64 { return ms(x.Republish.Latency[1]) }), "%.0f"))
		for _, name := range []string{BlobWriter, RefWriter, NATSServer, Postgres} {
			t.Row("republish CPU µs/event: "+name, summary(collect(cr.Runs, func(x RunResult) float64 {
				return us(x.Republish.Per(name).Total())
			}), "%.0f"))
		}
	}
	if len(cr.Paced) > 0 {
		t.Row(fmt.Sprintf("paced at %.0f/s (half the median): achieved uploads/s", cr.PacedRate), summary(collect(cr.Paced, RunResult.Rate), "%.0f"))
		for i, name := range []string{"p50", "p99", "max"} {
			t.Row("paced latency "+name+", ms", summary(collect(cr.Paced, func(x RunResult) float64 { return ms(x.Latency[i]) }), "%.1f"))
		}
	}
	if len(cr.PacedFloor) > 0 {
		t.Row("floor (p) at the same pace: achieved uploads/s", summary(collect(cr.PacedFloor, func(x PacedFloorRun) float64 { return x.Rate() }), "%.0f"))
		for i, name := range []string{"p50", "p99", "max"} {
			t.Row("floor (p) latency "+name+", ms", summary(collect(cr.PacedFloor, func(x PacedFloorRun) float64 { return ms(x.Latency[i]) }), "%.1f"))
		}
	}
	if len(cr.Paced) > 0 {
		t.Row("paced CPU µs per upload, every process (the services, nats-server, postgres, the producer)", summary(collect(cr.Paced, func(x RunResult) float64 {
			var sum time.Duration
			for _, name := range Processes {
				sum += x.Per(name).Total()
			}
			return us(sum)
		}), "%.0f"))
	}
	if len(cr.PacedFloor) > 0 {
		t.Row("floor (p) CPU µs per upload (nats-server, postgres, its stages and producer)", summary(collect(cr.PacedFloor, func(x PacedFloorRun) float64 { return us(x.TotalPerUpload().Total()) }), "%.0f"))
	}
	if len(cr.Paced) > 0 && cr.Paced[0].Legs.N > 0 {
		legRows(&t, "paced", collect(cr.Paced, func(x RunResult) load.Legs { return x.Legs }))
		if len(cr.PacedFloor) > 0 {
			legRows(&t, "floor (p)", collect(cr.PacedFloor, func(x PacedFloorRun) load.Legs { return x.Legs }))
		}
	}
	t.Write(w)
	line("")
	line("CPU µs per upload by process (user, system, and both: median (min–max) of the runs)")
	r.writeCPU(w, cr.Runs)
	var lost int
	for _, x := range cr.Runs {
		lost += x.Usage.Lost[Postgres]
	}
	if lost > 0 {
		line("note: %d Postgres backends exited during the runs; their CPU after the run began is missing", lost)
	}
	ck := cr.Runs[0].Checked
	objects := fmt.Sprintf("%d objects (size, sha256 of the bytes, sha256 metadata, content type)", ck.Objects)
	if ck.Objects == 0 {
		objects = "no objects (blobwriter's bucket is not the benchmark's to read)"
	}
	line("checked after each run: %d uploads' rows (upload_refs, subject_refs, both step markers) and %s: all whole", ck.Uploads, objects)
}

// legRows adds the rows of the consumers' legs of runs, labelled label:
// requested → blob_stored (blobwriter's) and blob_stored → completed
// (refwriter's), p50 and p99 of each, read from the stream.
func legRows(t *texttable.Table, label string, runs []load.Legs) {
	for _, leg := range []struct {
		name string
		of   func(load.Legs) [3]time.Duration
	}{
		{"store leg (requested → blob_stored)", func(l load.Legs) [3]time.Duration { return l.Store }},
		{"ref leg (blob_stored → completed)", func(l load.Legs) [3]time.Duration { return l.Ref }},
	} {
		for i, name := range []string{"p50", "p99"} {
			t.Row(fmt.Sprintf("%s %s %s, ms", label, leg.name, name), summary(collect(runs, func(l load.Legs) float64 { return ms(leg.of(l)[i]) }), "%.1f"))
		}
	}
}

// writeCPU writes the CPU table of runs: each process's user, system and
// total time per upload, and the machine's other work.
func (r *Report) writeCPU(w io.Writer, runs []RunResult) {
	var t texttable.Table
	t.Row("  process", "user", "system", "total")
	cell := func(f func(RunResult) time.Duration) string {
		return summary(collect(runs, func(x RunResult) float64 { return us(f(x)) }), "%.0f")
	}
	for _, name := range Processes {
		label := name
		switch name {
		case Postgres:
			label = "postgres (the benchmark's backends)"
		case Bench:
			label = "bench (producer + tracker)"
		}
		t.Row("  "+label,
			cell(func(x RunResult) time.Duration { return x.Per(name).User }),
			cell(func(x RunResult) time.Duration { return x.Per(name).System }),
			cell(func(x RunResult) time.Duration { return x.Per(name).Total() }))
	}
	t.Row("  other work on the machine", "", "", cell(func(x RunResult) time.Duration { return x.Usage.Other / time.Duration(x.N) }))
	t.Write(w)
}

func (r *Report) writeFloors(line func(string, ...any), w io.Writer) {
	f, c := r.Floors, r.Config
	line("== floors: each stage alone, measured at the start of each round, %d uploads of %d bytes ==", c.Uploads, c.Size)
	line("(a) JetStream, the pipeline's shape: publish → pull → publish → pull → publish, acks, no side effects")
	if len(f.JetStreamAgain) > 0 {
		line("(a′) the same uploads through (a) again, fresh message ids, on the stream (a) left: what a republish meets")
	}
	line("(b) the same objects into the bucket with gocloud.dev/blob (IfNotExist, metadata), %d writers", c.Concurrency)
	line("(c) the same rows (2 markers, upload_refs, subject_refs) into Postgres, %d uploads per transaction, %d connections", c.Batch, c.Concurrency)
	if len(f.Lookups) > 0 {
		line("(d) those markers read back with their results, one SELECT per step for %d uploads, %d connections", c.Batch, c.Concurrency)
	}
	line("CPU µs per upload, median (min–max) of the rounds; bench is the floor's own client side")
	var t texttable.Table
	t.Row("stage", "process", "uploads/s", "user", "system", "total")
	row := func(label string, rs []floors.Result) {
		if len(rs) == 0 {
			return
		}
		rate := summary(collect(rs, floors.Result.Rate), "%.0f")
		for _, name := range []string{floors.NATSServer, floors.PostgresServer, floors.Bench, ""} {
			if _, ok := rs[0].CPU[name]; (!ok && name != "") || (name == "" && len(rs[0].CPU) < 2) {
				continue
			}
			cost := func(x floors.Result) procstat.Times {
				if name == "" {
					return x.TotalPerUpload()
				}
				return x.PerUpload(name)
			}
			proc := name
			if name == "" {
				proc = "all"
			}
			t.Row(label, proc, rate,
				summary(collect(rs, func(x floors.Result) float64 { return us(cost(x).User) }), "%.0f"),
				summary(collect(rs, func(x floors.Result) float64 { return us(cost(x).System) }), "%.0f"),
				summary(collect(rs, func(x floors.Result) float64 { return us(cost(x).Total()) }), "%.0f"))
			label, rate = "", ""
		}
	}
	row("(a) JetStream", f.JetStream)
	row("(a′) (a) again", f.JetStreamAgain)
	for _, name := range c.Configs {
		row("(b) "+name+":// bucket", f.Bucket[name])
	}
	row("(c) Postgres rows", f.Postgres)
	row("(d) marker look-ups", f.Lookups)
	t.Write(w)

	checks := r.FloorChecks()
	if len(checks) > 0 {
		line("")
		line("floors against their stages: a floor does part of a stage's work, so it must cost no more than the")
		line("pipeline process doing that work in the same round (CPU µs per upload, user + system)")
		var ct texttable.Table
		ct.Row("round", "floor", "floor's part", "µs", "stage in the run", "µs", "verdict")
		for _, ck := range checks {
			part := ck.Spec.Part
			if part == "" {
				part = "all"
			}
			verdict := "ok"
			if ck.Above() {
				verdict = "FLOOR ABOVE ITS STAGE"
			}
			name := ck.Spec.Name
			if ck.Spec.Stage == BlobWriter {
				name = "(b) " + ck.Config + ":// bucket"
			}
			ct.Row(fmt.Sprint(ck.Round), name, part, fmt.Sprintf("%.0f", us(ck.Floor)),
				ck.Config+":// "+ck.Spec.Stage, fmt.Sprintf("%.0f", us(ck.Stage)), verdict)
		}
		ct.Write(w)
	}
	line("")
	line("ceiling = cores / the sum of the floors' CPU per upload (medians of the rounds; in a round where a floor's")
	line("part cost more than its stage, the part counts at the stage's cost)")
	for _, cr := range r.Configs {
		ceiling := r.CeilingOf(cr.Name)
		if ceiling == 0 {
			continue
		}
		var costs []time.Duration
		var notes []string
		for _, spec := range FloorSpecs {
			cost, capped := r.HonestFloor(spec, cr.Name)
			costs = append(costs, cost)
			if capped > 0 {
				notes = append(notes, fmt.Sprintf("%s capped in %d of %d rounds", spec.Name[:3], capped, len(spec.runs(f, cr.Name))))
			}
		}
		note := ""
		if len(notes) > 0 {
			note = " (" + strings.Join(notes, "; ") + ")"
		}
		line("ceiling %s:// = %d cores / (%.0f + %.0f + %.0f µs) = %.0f uploads/s%s", cr.Name, r.Machine.CPUs, us(costs[0]), us(costs[1]), us(costs[2]), ceiling, note)
		if len(cr.Runs) == 0 {
			continue
		}
		rate := cr.Rate().Median
		line("  blobref %s:// %.0f uploads/s = %.2f of the ceiling", cr.Name, rate, rate/ceiling)
		r.writeBreakdown(w, cr)
		if floor := r.RepublishFloor(cr.Name); floor > 0 {
			rp := cr.republishRate()
			ceiling := r.RepublishCeiling(cr.Name)
			a := r.republishJetStreamFloor()
			line("republish ceiling %s:// = the lower of %d cores / floors %s + (d) %.0f µs = %.0f events/s (their nats-server,",
				cr.Name, r.Machine.CPUs, a.label, us(floor), Ceiling(r.Machine.CPUs, floor))
			line("  Postgres and client sides each capped at the republish's own in its round) and floor %s's rate, %.0f/s (the", a.label, a.rate())
			line("  most one stream carries: JetStream takes a stream's messages on about one core) = %.0f events/s;", ceiling)
			line("  blobref republished %.0f events/s = %.2f of it", rp, rp/ceiling)
		}
	}
}

// republishRate is the median rate of cr's republishes, events/s.
func (cr ConfigResult) republishRate() float64 {
	var rates []float64
	for _, x := range cr.Runs {
		if x.Republish != nil {
			rates = append(rates, x.Republish.Rate())
		}
	}
	return stats.Summarize(rates).Median
}

// writeBreakdown shows where blobref's CPU goes next to the honest floors:
// the servers against their floors' share, the clients (the services and
// the producer) against the floors' client side.
func (r *Report) writeBreakdown(w io.Writer, cr ConfigResult) {
	f := r.Floors
	med := func(name string) time.Duration {
		return time.Duration(stats.Summarize(collect(cr.Runs, func(x RunResult) float64 {
			return float64(x.Per(name).Total())
		})).Median)
	}
	part := func(rs []floors.Result, name string, capBy string) time.Duration {
		values := make([]float64, len(rs))
		for i, x := range rs {
			d := x.PerUpload(name).Total()
			if capBy != "" && i < len(cr.Runs) {
				d = min(d, cr.Runs[i].Per(capBy).Total())
			}
			values[i] = float64(d)
		}
		return time.Duration(stats.Summarize(values).Median)
	}
	natsFloor := part(f.JetStream, floors.NATSServer, NATSServer)
	pgFloor := part(f.Postgres, floors.PostgresServer, Postgres)
	clientFloor := part(f.JetStream, floors.Bench, "") + part(f.Bucket[cr.Name], floors.Bench, BlobWriter) + part(f.Postgres, floors.Bench, "")
	var t texttable.Table
	t.Row("  CPU µs/upload", "blobref", "floor", "blobref − floor")
	add := func(label string, got, floor time.Duration) {
		t.Row("  "+label, fmt.Sprintf("%.0f", us(got)), fmt.Sprintf("%.0f", us(floor)), fmt.Sprintf("%+.0f", us(got-floor)))
	}
	add("nats-server (floor a)", med(NATSServer), natsFloor)
	add("postgres backends (floor c)", med(Postgres), pgFloor)
	add("blobwriter", med(BlobWriter), 0)
	add("refwriter", med(RefWriter), 0)
	add("bench producer + tracker", med(Bench), 0)
	clients := med(BlobWriter) + med(RefWriter) + med(Bench)
	add("clients together (floors a+b+c client side)", clients, clientFloor)
	add("total", med(NATSServer)+med(Postgres)+clients, natsFloor+pgFloor+clientFloor)
	t.Write(w)
}

func (r *Report) writeBacklog(line func(string, ...any), w io.Writer) {
	b := r.Backlog
	line("== memory under a backlog ==")
	line("%d request events pending (published at %.0f/s before the services started); services watched for %s,",
		b.Pending, b.PublishRate, b.Duration)
	line("in which %d uploads completed; %d requests still pending at the end; RSS sampled every 500ms", b.Completed, b.Left)
	var t texttable.Table
	t.Row("service", "RSS ready", "RSS max", "RSS end", "VmHWM", "target")
	for _, name := range []string{BlobWriter, RefWriter} {
		t.Row(name, mib(b.Ready[name]), mib(b.Max[name]), mib(b.End[name]), mib(b.Peak[name]), verdict(b.Peak[name] <= TargetBacklogRSS, "≤ 64 MiB"))
	}
	t.Write(w)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", procstat.MiB(n)) }

// reach says whether a target is within a ceiling measured in the same
// run.
func reach(ok bool) string {
	if ok {
		return "within the ceiling"
	}
	return "OUT OF REACH on this machine"
}

func verdict(ok bool, target string) string {
	if ok {
		return target + ": pass"
	}
	return target + ": MISS"
}

// pacedFloorP99 is the median over the paced rounds of floor (p)'s p99,
// each round's capped at that round's paced run's (a floor slower than the
// pipeline beside it measured the disk's state, not a floor), and in how
// many rounds it was capped; capped is -1 without floor (p).
func (cr ConfigResult) pacedFloorP99() (p99 time.Duration, capped int) {
	if len(cr.PacedFloor) == 0 {
		return 0, -1
	}
	var v []float64
	for i, f := range cr.PacedFloor {
		x := f.Latency[1]
		if i < len(cr.Paced) && cr.Paced[i].Latency[1] < x {
			x = cr.Paced[i].Latency[1]
			capped++
		}
		v = append(v, float64(x))
	}
	return time.Duration(stats.Summarize(v).Median), capped
}

func (r *Report) writeTargets(line func(string, ...any)) {
	line("== targets (issues 6 and 10) ==")
	for _, cr := range r.Configs {
		if len(cr.Runs) == 0 {
			line("%s://: not measured (%v)", cr.Name, cr.Err)
			continue
		}
		rate := cr.Rate().Median
		switch cr.Name {
		case File:
			line("file:// ≥ %d uploads/s end to end: %.0f, %s", TargetFileRate, rate, verdict(rate >= TargetFileRate, "")[2:])
			if ceiling := r.CeilingOf(File); ceiling > 0 {
				line("file:// ≥ %.1f of the ceiling (%.0f/s): %.2f, %s", TargetFileCeiling, ceiling, rate/ceiling, verdict(rate/ceiling >= TargetFileCeiling, "")[2:])
			}
		case Mem:
			if f := r.Floors; f != nil && len(f.JetStream) > 0 {
				floorA := r.floorARate()
				line("mem:// ≥ %.1f of floor (a) (%.0f/s): %.2f, %s", TargetMemOfFloorA, floorA, rate/floorA, verdict(rate/floorA >= TargetMemOfFloorA, "")[2:])
			}
		}
		if len(cr.Paced) > 0 {
			p99 := stats.Summarize(collect(cr.Paced, func(x RunResult) float64 { return ms(x.Latency[1]) })).Median
			line("%s:// p99 publish→completed ≤ 100 ms at half the maximum rate (%.0f/s): %.1f ms, %s", cr.Name, cr.PacedRate, p99, verdict(p99 <= ms(TargetPacedP99), "")[2:])
			if floor, capped := cr.pacedFloorP99(); capped >= 0 {
				under := "within reach (the floor is under it)"
				if floor > TargetPacedP99 {
					under = "OUT OF REACH on this machine (the floor is over it)"
				}
				note := ""
				if capped > 0 {
					note = fmt.Sprintf(" (capped at the paced run's in %d of %d rounds)", capped, len(cr.PacedFloor))
				}
				line("  floor (p) at the same pace: p99 %.1f ms%s: %s", ms(floor), note, under)
			}
		}
		if cr.Runs[0].Republish != nil {
			rp := cr.republishRate()
			line("%s:// republish ≥ %d events/s: %.0f, %s", cr.Name, TargetRepublishRate, rp, verdict(rp >= TargetRepublishRate, "")[2:])
			if ceiling := r.RepublishCeiling(cr.Name); ceiling > 0 {
				line("  republish ceiling %.0f events/s: %s", ceiling, reach(ceiling >= TargetRepublishRate))
			}
		}
	}
	if checks := r.FloorChecks(); len(checks) > 0 {
		above := 0
		for _, c := range checks {
			if c.Above() {
				above++
			}
		}
		line("every floor at or below its stage's cost in its round: %d of %d above, %s", above, len(checks), verdict(above == 0, "")[2:])
	}
	if b := r.Backlog; b != nil {
		for _, name := range []string{BlobWriter, RefWriter} {
			line("%s RSS ≤ 64 MiB with %d pending: peak %s, %s", name, b.Pending, mib(b.Peak[name]), verdict(b.Peak[name] <= TargetBacklogRSS, "")[2:])
		}
	}
	line("(targets are reported, never asserted; the machine is shared, so other work shows in \"other work on the machine\")")
}
