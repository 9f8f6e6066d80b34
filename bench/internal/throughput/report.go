package throughput

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/blobref/blobref/bench/internal/floors"
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
	s := stats.Summarize(values)
	if s.N == 0 {
		return "-"
	}
	if s.N == 1 {
		return fmt.Sprintf(format, s.Median)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.Median, s.Min, s.Max)
}

func collect[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, 0, len(xs))
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
	line("blobref throughput benchmark (issue 6): request events through blobwriter and refwriter")
	line("")
	line("command   %s", c.Command)
	line("machine   %s", r.Machine)
	line("tree      %s", r.Source)
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
	line("data      %s (one fresh directory per run, nothing deleted)", r.Dir)
	line("wall time %s", r.Wall.Round(time.Second))
	line("figures   median (min–max) of %d runs of %d uploads of %d bytes each, unless noted", c.Runs, c.Uploads, c.Size)

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
	for _, name := range Processes {
		label := name
		switch name {
		case Postgres:
			label = "postgres (all its processes)"
		case Bench:
			label = "bench (producer + tracker)"
		}
		t.Row("CPU s/1,000 uploads: "+label, summary(collect(cr.Runs, func(x RunResult) float64 { return x.PerThousand(name).Seconds() }), "%.3f"))
	}
	t.Row("CPU s/1,000 uploads: other work on the machine", summary(collect(cr.Runs, func(x RunResult) float64 {
		return (x.Usage.Other * 1000 / time.Duration(x.N)).Seconds()
	}), "%.3f"))
	for _, name := range []string{BlobWriter, RefWriter, NATSServer} {
		t.Row("peak RSS "+name+", MiB", summary(collect(cr.Runs, func(x RunResult) float64 { return procstat.MiB(x.Peak[name]) }), "%.1f"))
	}
	if cr.Runs[0].Republish != nil {
		t.Row("republish (every step skipped), events/s", summary(collect(cr.Runs, func(x RunResult) float64 { return x.Republish.Rate() }), "%.0f"))
		t.Row("republish latency p99, ms", summary(collect(cr.Runs, func(x RunResult) float64 { return ms(x.Republish.Latency[1]) }), "%.0f"))
		for _, name := range []string{BlobWriter, RefWriter, NATSServer, Postgres} {
			t.Row("republish CPU µs/event: "+name, summary(collect(cr.Runs, func(x RunResult) float64 {
				return float64(x.Republish.PerThousand(name).Microseconds()) / 1000
			}), "%.0f"))
		}
	}
	if p := cr.Paced; p != nil {
		t.Row(fmt.Sprintf("paced at %.0f/s (half the median): achieved uploads/s", cr.PacedRate), fmt.Sprintf("%.0f", p.Rate()))
		t.Row("paced latency p50 / p99 / max, ms", fmt.Sprintf("%.1f / %.1f / %.1f", ms(p.Latency[0]), ms(p.Latency[1]), ms(p.Latency[2])))
	}
	t.Write(w)
}

// floorCost is a floor's median CPU per upload by process, and in total.
func floorCost(rs []floors.Result, name string) time.Duration {
	return time.Duration(stats.Summarize(collect(rs, func(x floors.Result) float64 { return float64(x.PerUpload(name)) })).Median)
}

func floorTotal(rs []floors.Result) time.Duration {
	return time.Duration(stats.Summarize(collect(rs, func(x floors.Result) float64 { return float64(x.TotalPerUpload()) })).Median)
}

// CeilingOf is the ceiling (uploads/s) of bucket configuration name from
// the floors' medians, 0 without floors.
func (r *Report) CeilingOf(name string) float64 {
	f := r.Floors
	if f == nil || len(f.Bucket[name]) == 0 {
		return 0
	}
	return Ceiling(r.Machine.CPUs, floorTotal(f.JetStream), floorTotal(f.Bucket[name]), floorTotal(f.Postgres))
}

func (r *Report) writeFloors(line func(string, ...any), w io.Writer) {
	f, c := r.Floors, r.Config
	line("== floors: each stage alone, %d uploads of %d bytes ==", c.Uploads, c.Size)
	line("(a) JetStream, the pipeline's shape: publish → pull → publish → pull → publish, acks, no side effects")
	line("(b) the same objects into the bucket with gocloud.dev/blob (IfNotExist, metadata), %d writers", c.Concurrency)
	line("(c) the same rows (2 markers, upload_refs, subject_refs) into Postgres, %d uploads per transaction, %d connections", c.Batch, c.Concurrency)
	var t texttable.Table
	t.Row("stage", "uploads/s", "CPU µs/upload", "nats-server", "postgres", "bench")
	row := func(label string, rs []floors.Result) {
		if len(rs) == 0 {
			return
		}
		cell := func(name string) string {
			if _, ok := rs[0].CPU[name]; !ok {
				return "-"
			}
			return summary(collect(rs, func(x floors.Result) float64 { return us(x.PerUpload(name)) }), "%.0f")
		}
		t.Row(label, summary(collect(rs, floors.Result.Rate), "%.0f"),
			summary(collect(rs, func(x floors.Result) float64 { return us(x.TotalPerUpload()) }), "%.0f"),
			cell(floors.NATSServer), cell(floors.PostgresServer), cell(floors.Bench))
	}
	row("(a) JetStream", f.JetStream)
	for _, name := range c.Configs {
		row("(b) "+name+":// bucket", f.Bucket[name])
	}
	row("(c) Postgres rows", f.Postgres)
	t.Write(w)
	line("")
	for _, cr := range r.Configs {
		ceiling := r.CeilingOf(cr.Name)
		if ceiling == 0 {
			continue
		}
		a, b, cc := floorTotal(f.JetStream), floorTotal(f.Bucket[cr.Name]), floorTotal(f.Postgres)
		line("ceiling %s:// = %d cores / (%.0f + %.0f + %.0f µs) = %.0f uploads/s", cr.Name, r.Machine.CPUs, us(a), us(b), us(cc), ceiling)
		if len(cr.Runs) == 0 {
			continue
		}
		rate := cr.Rate().Median
		line("  blobref %s:// %.0f uploads/s = %.2f of the ceiling", cr.Name, rate, rate/ceiling)
		r.writeBreakdown(w, cr, a, b, cc)
	}
}

// writeBreakdown shows where blobref's CPU goes next to the floors: the
// servers against their floors' share, the clients (the services and the
// producer) against the floors' client side.
func (r *Report) writeBreakdown(w io.Writer, cr ConfigResult, a, b, c time.Duration) {
	f := r.Floors
	med := func(name string) time.Duration {
		return time.Duration(stats.Summarize(collect(cr.Runs, func(x RunResult) float64 {
			return float64(x.Usage.CPU[name] / time.Duration(x.N))
		})).Median)
	}
	natsFloor := floorCost(f.JetStream, floors.NATSServer)
	pgFloor := floorCost(f.Postgres, floors.PostgresServer)
	clientFloor := floorCost(f.JetStream, floors.Bench) + floorCost(f.Bucket[cr.Name], floors.Bench) + floorCost(f.Postgres, floors.Bench)
	var t texttable.Table
	t.Row("  CPU µs/upload", "blobref", "floor", "blobref − floor")
	add := func(label string, got, floor time.Duration) {
		t.Row("  "+label, fmt.Sprintf("%.0f", us(got)), fmt.Sprintf("%.0f", us(floor)), fmt.Sprintf("%+.0f", us(got-floor)))
	}
	add("nats-server (floor a)", med(NATSServer), natsFloor)
	add("postgres (floor c)", med(Postgres), pgFloor)
	add("blobwriter", med(BlobWriter), 0)
	add("refwriter", med(RefWriter), 0)
	add("bench producer + tracker", med(Bench), 0)
	clients := med(BlobWriter) + med(RefWriter) + med(Bench)
	add("clients together (floors a+b+c client side)", clients, clientFloor)
	add("total", med(NATSServer)+med(Postgres)+clients, a+b+c)
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

func verdict(ok bool, target string) string {
	if ok {
		return target + ": pass"
	}
	return target + ": MISS"
}

func (r *Report) writeTargets(line func(string, ...any)) {
	line("== targets (issue 6) ==")
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
				floorA := stats.Summarize(collect(f.JetStream, floors.Result.Rate)).Median
				line("mem:// ≥ %.1f of floor (a) (%.0f/s): %.2f, %s", TargetMemOfFloorA, floorA, rate/floorA, verdict(rate/floorA >= TargetMemOfFloorA, "")[2:])
			}
		}
		if p := cr.Paced; p != nil {
			line("%s:// p99 publish→completed ≤ 100 ms at half the maximum rate (%.0f/s): %.1f ms, %s", cr.Name, cr.PacedRate, ms(p.Latency[1]), verdict(p.Latency[1] <= TargetPacedP99, "")[2:])
		}
		if cr.Runs[0].Republish != nil {
			rp := stats.Summarize(collect(cr.Runs, func(x RunResult) float64 { return x.Republish.Rate() })).Median
			line("%s:// republish ≥ %d events/s: %.0f, %s", cr.Name, TargetRepublishRate, rp, verdict(rp >= TargetRepublishRate, "")[2:])
		}
	}
	if b := r.Backlog; b != nil {
		for _, name := range []string{BlobWriter, RefWriter} {
			line("%s RSS ≤ 64 MiB with %d pending: peak %s, %s", name, b.Pending, mib(b.Peak[name]), verdict(b.Peak[name] <= TargetBacklogRSS, "")[2:])
		}
	}
	line("(targets are reported, never asserted; the machine is shared, so other work shows in \"other work on the machine\")")
}
