package ingestbench

import (
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/bench/internal/texttable"
)

// Targets of issues 3 and 10.
const (
	TargetPeakRSS      = 64 << 20 // ingest and blobwriter, any upload size; ingest at 256 clients
	TargetRate64       = 2400     // uploads/s referenced at 64 clients
	TargetCPUOfBulk    = 2.0      // HTTP CPU per upload at 64 clients, over the bulk path's
	TargetP50OneClient = 4 * time.Millisecond
	TargetAcceptRate64 = 4000 // uploads/s accepted at 64 clients
)

// costed are the processes whose CPU an upload costs blobref, in the
// report's order; the bench client is the caller's.
var costed = []string{pipeline.Ingest, pipeline.BlobWriter, pipeline.RefWriter, pipeline.NATSServer, pipeline.Postgres}

// programs are the processes whose memory the report shows, in its order.
var programs = []string{pipeline.Ingest, pipeline.BlobWriter, pipeline.RefWriter, pipeline.NATSServer}

// cost is the CPU time per upload of the costed processes of usage over n
// uploads.
func cost(u procstat.Usage, n int) time.Duration {
	var sum time.Duration
	for _, name := range costed {
		sum += u.Per(name, n).Total()
	}
	return sum
}

// Write prints the report as text: the configuration and the machine, then
// each variant's tables, then the variants side by side.
func (r *Report) Write(w io.Writer) error {
	ew := &texttable.ErrWriter{W: w}
	line := func(format string, args ...any) { fmt.Fprintf(ew, format+"\n", args...) }
	c := r.Config

	line("blobref ingest benchmark (issue 10): uploads over HTTP through the whole pipeline, and the bulk path")
	line("")
	line("command   %s", c.Command)
	line("machine   %s", r.Machine)
	for i, v := range r.Variants {
		label := "variants"
		if i > 0 {
			label = ""
		}
		line("%-9s %s: %s", label, v.Name, v.Source)
	}
	line("pipeline  nats-server %s with JetStream, PostgreSQL %s, a file:// bucket; a fresh store, schema and", r.NATSVersion, r.PostgresVersion)
	line("          bucket per pipeline; ingest, blobwriter and refwriter each its own process; nats-server and this")
	line("          tree's services built by %s with -trimpath -ldflags='-s -w'; TMPDIR %s", r.GoVersion, r.TempDir)
	except := slices.Clone(r.ServiceEnv)
	if u, err := url.Parse(c.DatabaseURL); err == nil {
		for _, k := range slices.Sorted(maps.Keys(u.Query())) {
			if strings.HasPrefix(k, "pool_") { // pgxpool settings, which reach the services
				except = append(except, k+"="+u.Query().Get(k)+" (in DATABASE_URL)")
			}
		}
	}
	settings := "their defaults"
	if len(except) > 0 {
		settings += ", except " + strings.Join(except, " ")
	}
	line("settings  %s", settings)
	line("data      %s (the rounds' directories stay: remove it when done)", r.Dir)
	line("wall time %s", r.Wall.Round(time.Second))
	if c.Runs > 0 {
		line("rounds    %d, each running every variant once (in the order above, reversed every other round): its HTTP", c.Runs)
		line("          phases on one pipeline (after %d unmeasured uploads), then its bulk phase on another", c.Warmup)
		line("figures   median ±spread of the rounds (spread: half the range, in %% of the median)")
	}

	if c.Runs > 0 {
		line("")
		r.writeLegend(line)
	}
	for _, v := range r.Variants {
		line("")
		r.writeVariant(ew, line, v)
	}
	if len(r.Variants) > 1 && c.Runs > 0 {
		line("")
		r.writeComparison(ew, line)
	}
	return ew.Err()
}

// writeLegend says once what the rounds' tables show.
func (r *Report) writeLegend(line func(string, ...any)) {
	c := r.Config
	line("What the tables show")
	if len(c.Clients) > 0 {
		line("HTTP path: %d uploads of %s per phase from N clients, each sending its next upload once the last was", c.Uploads, formatBytes(int64(c.UploadSize)))
		line("referenced: Prefer: wait=%d, and the same request with the same Idempotency-Key again until 200/201", c.Wait)
		line("(a 202 at once, a 409 or 503 after its Retry-After)")
		line("  uploads/s: uploads referenced per second, first request → last 200/201")
		line("  p50, p99:  first request of an upload → its 200/201, ms")
		line("  retries:   requests beyond the first, per upload")
		line("  peak RSS:  ingest's largest resident set during the phase (VmHWM), MiB")
	}
	if c.AcceptClients > 0 {
		line("Accept only: %d uploads from %d clients without Prefer, each done at its 202 (JetStream has the request)", c.Uploads, c.AcceptClients)
		line("  accepted/s: 202s per second, first request → last 202; p50, p99: request → 202, ms")
		line("  completed/s: first request → last uploads.completed (awaited after the last 202)")
	}
	line("CPU µs per upload by process: user + system time from /proc/<pid>/stat over the phase, per upload")
	line("  postgres: the backends of the benchmark's connections only (pg_stat_activity by application_name)")
	line("  total:    the five processes before it; × bulk: total over the bulk phase's total in the same round")
	line("  bench:    the benchmark's own process (the HTTP clients, or the producer), not in the total")
	line("  other:    the rest of the machine's busy time meanwhile (other work on a shared machine shows here)")
	if c.BulkUploads > 0 {
		line("  bulk:     %d request events published straight to JetStream as fast as it accepts them (as make bench),", c.BulkUploads)
		line("            on a pipeline of blobwriter and refwriter only")
	}
}

func (r *Report) writeVariant(w io.Writer, line func(string, ...any), v *Variant) {
	c := r.Config
	line("==== %s ====", v.Name)
	if v.Err != nil {
		line("FAILED: %v", v.Err)
	}
	if len(v.Rounds) > 0 {
		if len(c.Clients) > 0 {
			r.writeHTTP(w, line, v)
			line("")
		}
		if c.AcceptClients > 0 {
			r.writeAccept(w, line, v)
			line("")
		}
		r.writeCPU(w, line, v)
		line("")
		line("checked after the phases: %d uploads' rows (upload_refs, subject_refs, both step markers) and %d objects", v.Checked.Uploads, v.Checked.Objects)
		line("(size, sha256 of the bytes, sha256 metadata, content type): all whole")
	}
	if len(v.Memory) > 0 {
		line("")
		r.writeMemory(w, line, v)
	}
	if len(v.Rounds) > 0 || len(v.Memory) > 0 {
		line("")
		r.writeTargets(line, v)
	}
}

// levels are the rounds' phases at the i-th number of clients.
func (v *Variant) levels(i int) []Level {
	var out []Level
	for _, r := range v.Rounds {
		if i < len(r.Levels) {
			out = append(out, r.Levels[i])
		}
	}
	return out
}

// accepts are the rounds' accept-only phases.
func (v *Variant) accepts() []Level {
	var out []Level
	for _, r := range v.Rounds {
		if r.Accept != nil {
			out = append(out, *r.Accept)
		}
	}
	return out
}

// bulks are the rounds' bulk phases.
func (v *Variant) bulks() []load.Phase {
	var out []load.Phase
	for _, r := range v.Rounds {
		if r.Bulk != nil {
			out = append(out, *r.Bulk)
		}
	}
	return out
}

func summarize[T any](xs []T, f func(T) float64) stats.Summary {
	values := make([]float64, len(xs))
	for i, x := range xs {
		values[i] = f(x)
	}
	return stats.Summarize(values)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func (r *Report) writeHTTP(w io.Writer, line func(string, ...any), v *Variant) {
	c := r.Config
	line("HTTP path, Prefer: wait=%d until 200/201", c.Wait)
	var t texttable.Table
	t.Row("  clients", "uploads/s", "p50 ms", "p99 ms", "retries", "ingest peak RSS MiB")
	for i, n := range c.Clients {
		ls := v.levels(i)
		if len(ls) == 0 {
			continue
		}
		t.Row(fmt.Sprintf("  %d", n),
			summarize(ls, Level.Rate).WithSpread("%.0f"),
			summarize(ls, func(l Level) float64 { return ms(l.Latency[0]) }).WithSpread("%.1f"),
			summarize(ls, func(l Level) float64 { return ms(l.Latency[1]) }).WithSpread("%.1f"),
			summarize(ls, Level.Retries).WithSpread("%.2f"),
			summarize(ls, func(l Level) float64 { return procstat.MiB(l.Peak[pipeline.Ingest]) }).WithSpread("%.1f"))
	}
	t.Write(w)
}

func (r *Report) writeAccept(w io.Writer, line func(string, ...any), v *Variant) {
	c := r.Config
	ls := v.accepts()
	if len(ls) == 0 {
		return
	}
	line("Accept only, no Prefer, done at 202")
	var t texttable.Table
	t.Row("  clients", "accepted/s", "p50 ms", "p99 ms", "completed/s")
	t.Row(fmt.Sprintf("  %d", c.AcceptClients),
		summarize(ls, Level.Rate).WithSpread("%.0f"),
		summarize(ls, func(l Level) float64 { return ms(l.Latency[0]) }).WithSpread("%.1f"),
		summarize(ls, func(l Level) float64 { return ms(l.Latency[1]) }).WithSpread("%.1f"),
		summarize(ls, Level.CompletedRate).WithSpread("%.0f"))
	t.Write(w)
}

// phaseCost is one row of the CPU table: a phase's usage and uploads in
// each round, and its bulk phase's, by round.
type phaseCost struct {
	label string
	usage []procstat.Usage
	n     []int
	bulk  []*load.Phase // the same round's bulk phase, nil without one
}

// costRows are the CPU table's rows of v: each HTTP phase, accept only,
// and bulk.
func (r *Report) costRows(v *Variant) []phaseCost {
	var rows []phaseCost
	add := func(label string, get func(Round) (procstat.Usage, int, bool)) {
		row := phaseCost{label: label}
		for _, rd := range v.Rounds {
			if u, n, ok := get(rd); ok {
				row.usage, row.n, row.bulk = append(row.usage, u), append(row.n, n), append(row.bulk, rd.Bulk)
			}
		}
		if len(row.usage) > 0 {
			rows = append(rows, row)
		}
	}
	for i, clients := range r.Config.Clients {
		add("HTTP, "+clientsOf(clients), func(rd Round) (procstat.Usage, int, bool) {
			if i >= len(rd.Levels) {
				return procstat.Usage{}, 0, false
			}
			return rd.Levels[i].Usage, rd.Levels[i].N, true
		})
	}
	add("accept only, "+clientsOf(r.Config.AcceptClients), func(rd Round) (procstat.Usage, int, bool) {
		if rd.Accept == nil {
			return procstat.Usage{}, 0, false
		}
		return rd.Accept.Usage, rd.Accept.N, true
	})
	add("bulk, JetStream", func(rd Round) (procstat.Usage, int, bool) {
		if rd.Bulk == nil {
			return procstat.Usage{}, 0, false
		}
		return rd.Bulk.Usage, rd.Bulk.N, true
	})
	return rows
}

// median of f over the row's rounds.
func (p phaseCost) median(f func(u procstat.Usage, n int, bulk *load.Phase) (float64, bool)) stats.Summary {
	var values []float64
	for i := range p.usage {
		if x, ok := f(p.usage[i], p.n[i], p.bulk[i]); ok {
			values = append(values, x)
		}
	}
	return stats.Summarize(values)
}

// ratio is the row's total CPU per upload over its round's bulk phase's.
func ratio(u procstat.Usage, n int, bulk *load.Phase) (float64, bool) {
	if bulk == nil || cost(bulk.Usage, bulk.N) <= 0 {
		return 0, false
	}
	return float64(cost(u, n)) / float64(cost(bulk.Usage, bulk.N)), true
}

func (r *Report) writeCPU(w io.Writer, line func(string, ...any), v *Variant) {
	line("CPU µs per upload by process")
	var t texttable.Table
	t.Row(append(append([]string{"  phase"}, costed...), "total", "× bulk", "bench", "other")...)
	for _, row := range r.costRows(v) {
		cells := []string{"  " + row.label}
		for _, name := range costed {
			s := row.median(func(u procstat.Usage, n int, _ *load.Phase) (float64, bool) {
				_, ok := u.CPU[name]
				return us(u.Per(name, n).Total()), ok
			})
			cells = append(cells, medianCell(s, "%.0f"))
		}
		cells = append(cells,
			row.median(func(u procstat.Usage, n int, _ *load.Phase) (float64, bool) { return us(cost(u, n)), true }).WithSpread("%.0f"),
			row.median(ratio).WithSpread("%.2f"),
			medianCell(row.median(func(u procstat.Usage, n int, _ *load.Phase) (float64, bool) {
				return us(u.Per(pipeline.Bench, n).Total()), true
			}), "%.0f"),
			medianCell(row.median(func(u procstat.Usage, n int, _ *load.Phase) (float64, bool) {
				return us(u.Other / time.Duration(n)), true
			}), "%.0f"))
		t.Row(cells...)
	}
	t.Write(w)
	var lost int
	for _, rd := range v.Rounds {
		for _, l := range rd.Levels {
			lost += l.Usage.Lost[pipeline.Postgres]
		}
	}
	if lost > 0 {
		line("note: %d Postgres backends exited during the phases; their CPU after the phase began is missing", lost)
	}
}

// medianCell is s's median, "-" without values.
func medianCell(s stats.Summary, format string) string {
	if s.N == 0 {
		return "-"
	}
	return fmt.Sprintf(format, s.Median)
}

func (r *Report) writeMemory(w io.Writer, line func(string, ...any), v *Variant) {
	line("Memory: one upload at a time, streamed over HTTP from a generator (bodies over ingest's INLINE_THRESHOLD,")
	line("512 KiB by default, travel by claim check); peak RSS (VmHWM of /proc/<pid>/status, reset as the upload")
	line("starts, read once its uploads.completed event arrived) after one unmeasured warm-up upload")
	var t texttable.Table
	header := []string{"  process", "idle"}
	for _, m := range v.Memory {
		header = append(header, "peak "+formatBytes(m.Size))
	}
	t.Row(append(header, "growth", "target")...)
	for _, name := range programs {
		row := []string{"  " + name, mib(v.Memory[0].Before[name])}
		worst := int64(0)
		for _, m := range v.Memory {
			row = append(row, mib(m.Peak[name]))
			worst = max(worst, m.Peak[name])
		}
		growth := v.Memory[len(v.Memory)-1].Peak[name] - v.Memory[0].Peak[name]
		row = append(row, fmt.Sprintf("%+.1f MiB", procstat.MiB(growth)))
		switch name {
		case pipeline.Ingest, pipeline.BlobWriter:
			row = append(row, fmt.Sprintf("< %s: %s", formatBytes(TargetPeakRSS), verdict(worst < TargetPeakRSS)))
		default:
			row = append(row, "none")
		}
		t.Row(row...)
	}
	t.Write(w)
	var times []string
	for _, m := range v.Memory {
		times = append(times, fmt.Sprintf("%s accepted after %s%s, completed after %s%s", formatBytes(m.Size),
			elapsed(m.Accepted), rate(m.Size, m.Accepted), elapsed(m.Completed), rate(m.Size, m.Completed)))
	}
	line("%s", strings.Join(times, "; "))
	line("(idle: RSS as the first measured upload started; growth: peak at %s minus peak at %s)",
		formatBytes(v.Memory[len(v.Memory)-1].Size), formatBytes(v.Memory[0].Size))
}

// rate is " (N MiB/s)" for size bytes in d, or "" below 64 MiB (too fast to
// mean anything).
func rate(size int64, d time.Duration) string {
	if size < 64<<20 || d <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%.0f MiB/s)", procstat.MiB(size)/d.Seconds())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", procstat.MiB(n)) }

func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "MISS"
}

// level is the rounds' phases of v at clients clients (nil when not
// measured).
func (r *Report) level(v *Variant, clients int) []Level {
	i := slices.Index(r.Config.Clients, clients)
	if i < 0 {
		return nil
	}
	return v.levels(i)
}

func (r *Report) writeTargets(line func(string, ...any), v *Variant) {
	line("targets (issue 10; reported, never asserted; medians):")
	if ls := r.level(v, 64); len(ls) > 0 {
		x := summarize(ls, Level.Rate).Median
		line("  64 clients with Prefer: wait ≥ %d uploads/s referenced: %.0f, %s", TargetRate64, x, verdict(x >= TargetRate64))
		var ratios []float64
		for _, rd := range v.Rounds {
			if i := slices.Index(r.Config.Clients, 64); i < len(rd.Levels) {
				if x, ok := ratio(rd.Levels[i].Usage, rd.Levels[i].N, rd.Bulk); ok {
					ratios = append(ratios, x)
				}
			}
		}
		if s := stats.Summarize(ratios); s.N > 0 {
			line("  HTTP CPU per upload at 64 clients ≤ %.0f× the bulk path's: %.2f×, %s", TargetCPUOfBulk, s.Median, verdict(s.Median <= TargetCPUOfBulk))
		}
	}
	if ls := r.level(v, 1); len(ls) > 0 {
		x := time.Duration(summarize(ls, func(l Level) float64 { return float64(l.Latency[0]) }).Median)
		line("  1 client, p50 request → 201 ≤ %s: %.1f ms, %s", TargetP50OneClient, ms(x), verdict(x <= TargetP50OneClient))
	}
	if ls := v.accepts(); len(ls) > 0 && r.Config.AcceptClients == 64 {
		x := summarize(ls, Level.Rate).Median
		line("  accept only, 64 clients ≥ %d uploads/s accepted: %.0f, %s", TargetAcceptRate64, x, verdict(x >= TargetAcceptRate64))
	}
	if ls := r.level(v, 256); len(ls) > 0 {
		var peak int64
		for _, l := range ls {
			peak = max(peak, l.Peak[pipeline.Ingest])
		}
		line("  ingest RSS ≤ 64 MiB at 256 clients: peak %s, %s", mib(peak), verdict(peak <= TargetPeakRSS))
	}
	if len(v.Memory) > 0 {
		var worst int64
		for _, m := range v.Memory {
			worst = max(worst, m.Peak[pipeline.Ingest], m.Peak[pipeline.BlobWriter])
		}
		line("  ingest and blobwriter < 64 MiB with an upload of %s: peak %s, %s", formatBytes(v.Memory[len(v.Memory)-1].Size), mib(worst), verdict(worst < TargetPeakRSS))
	}
}

// figure is one line of the comparison: a median per variant.
type figure struct {
	label  string
	format string
	value  func(v *Variant) (float64, bool)
}

func (r *Report) figures() []figure {
	var out []figure
	med := func(ls []Level, f func(Level) float64) (float64, bool) {
		if len(ls) == 0 {
			return 0, false
		}
		return summarize(ls, f).Median, true
	}
	for _, clients := range r.Config.Clients {
		out = append(out,
			figure{"HTTP, " + clientsOf(clients) + ": uploads/s", "%.0f", func(v *Variant) (float64, bool) { return med(r.level(v, clients), Level.Rate) }},
			figure{"HTTP, " + clientsOf(clients) + ": p50 ms", "%.1f", func(v *Variant) (float64, bool) {
				return med(r.level(v, clients), func(l Level) float64 { return ms(l.Latency[0]) })
			}},
			figure{"HTTP, " + clientsOf(clients) + ": p99 ms", "%.1f", func(v *Variant) (float64, bool) {
				return med(r.level(v, clients), func(l Level) float64 { return ms(l.Latency[1]) })
			}},
			figure{"HTTP, " + clientsOf(clients) + ": CPU µs/upload", "%.0f", func(v *Variant) (float64, bool) {
				return med(r.level(v, clients), func(l Level) float64 { return us(cost(l.Usage, l.N)) })
			}},
			figure{"HTTP, " + clientsOf(clients) + ": CPU × bulk", "%.2f", func(v *Variant) (float64, bool) {
				var ratios []float64
				i := slices.Index(r.Config.Clients, clients)
				for _, rd := range v.Rounds {
					if i < len(rd.Levels) {
						if x, ok := ratio(rd.Levels[i].Usage, rd.Levels[i].N, rd.Bulk); ok {
							ratios = append(ratios, x)
						}
					}
				}
				s := stats.Summarize(ratios)
				return s.Median, s.N > 0
			}},
		)
	}
	if r.Config.AcceptClients > 0 {
		out = append(out, figure{"accept only, " + clientsOf(r.Config.AcceptClients) + ": accepted/s", "%.0f", func(v *Variant) (float64, bool) {
			return med(v.accepts(), Level.Rate)
		}})
	}
	if r.Config.BulkUploads > 0 {
		out = append(out, figure{"bulk: CPU µs/upload", "%.0f", func(v *Variant) (float64, bool) {
			bs := v.bulks()
			if len(bs) == 0 {
				return 0, false
			}
			return summarize(bs, func(p load.Phase) float64 { return us(cost(p.Usage, p.N)) }).Median, true
		}})
	}
	if slices.Contains(r.Config.Clients, 256) {
		out = append(out, figure{"ingest peak RSS at 256 clients, MiB", "%.1f", func(v *Variant) (float64, bool) {
			return med(r.level(v, 256), func(l Level) float64 { return procstat.MiB(l.Peak[pipeline.Ingest]) })
		}})
	}
	return out
}

func (r *Report) writeComparison(w io.Writer, line func(string, ...any)) {
	first, last := r.Variants[0], r.Variants[len(r.Variants)-1]
	line("==== the variants side by side (medians of the rounds) ====")
	line("%s / %s: the last variant's figure over the first's", last.Name, first.Name)
	var t texttable.Table
	header := []string{"  figure"}
	for _, v := range r.Variants {
		header = append(header, v.Name)
	}
	t.Row(append(header, last.Name+" / "+first.Name)...)
	for _, f := range r.figures() {
		cells := []string{"  " + f.label}
		for _, v := range r.Variants {
			x, ok := f.value(v)
			if !ok {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, fmt.Sprintf(f.format, x))
		}
		a, okA := f.value(first)
		b, okB := f.value(last)
		if okA && okB && a != 0 {
			cells = append(cells, fmt.Sprintf("%.2f", b/a))
		} else {
			cells = append(cells, "-")
		}
		t.Row(cells...)
	}
	t.Write(w)
}
