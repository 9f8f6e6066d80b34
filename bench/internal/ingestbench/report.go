package ingestbench

import (
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/bench/internal/texttable"
	"github.com/blobref/blobref/internal/release"
)

// programs are the processes whose memory the report shows, in its order.
var programs = []string{pipeline.Ingest, pipeline.BlobWriter, pipeline.RefWriter, pipeline.NATSServer}

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
	line("          tree's services built by %s with %s; TMPDIR %s", r.GoVersion, strings.Join(release.BuildFlags(), " "), r.TempDir)
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
		if c.runsChain() {
			line("          and, before the bulk phase, the latency floor on a pipeline of its own (after %d unmeasured uploads)", c.Warmup)
		}
		if c.Floor {
			line("          and, before the bulk phase, the HTTP accept floor on another (after %d unmeasured uploads)", c.Warmup)
		}
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
		line("  WAL:       bytes of write-ahead log Postgres wrote over the phase, per upload (the whole server's)")
		line("Where an upload's time goes: for %d uploads of each phase (or all, if fewer), the time from its first request", stageSample)
		line("to its 200/201 split where JetStream stored its requested, blob_stored and completed events (the stream's")
		line("timestamps, the clients' clock: one machine); the median of each leg, in ms:")
		line("  ingest → requested:        HTTP, the record, the publish")
		line("  blobwriter → blob_stored:  the delivery, the claim, the object, the marker, the publish")
		line("  refwriter → completed:     the delivery, the object's check, the reference and marker, the publish")
		line("  ingest → 201:              the completed event's delivery to ingest, the answer")
		line("  (a leg counts the wait for its process; the medians of the legs need not add up to the p50)")
	}
	if c.AcceptClients > 0 {
		line("Accept only: %d uploads from %d clients without Prefer, each done at its 202 (JetStream has the request)", c.Uploads, c.AcceptClients)
		line("  accepted/s: 202s per second, first request → last 202; p50, p99: request → 202, ms")
		line("  completed/s: first request → last uploads.completed (awaited after the last 202)")
	}
	line("CPU µs per upload by process: user + system time from /proc/<pid>/stat over the phase, per upload; a phase")
	line("  ends once ingest's read model has folded in the events its uploads left (its consumers drained)")
	line("  postgres: the backends of the benchmark's connections only (pg_stat_activity by application_name)")
	line("  total:    the five processes before it; × bulk: total over the bulk phase's total in the same round")
	line("  bench:    the benchmark's own process (the HTTP clients, or the producer), not in the total")
	line("  other:    the rest of the machine's busy time meanwhile (other work on a shared machine shows here)")
	line("the machine (under the rate targets): the machine's busy time over the phase (/proc/stat) per upload, the clients,")
	line("  other work and what the uploads left for after their last answer included; the CPUs that figure keeps busy at the")
	line("  rate measured; and the CPU per upload the CPUs leave at the target rate (CPUs × 1e6 / target). A rate that keeps every")
	line("  CPU busy is bound by CPU: it meets the target only once its CPU per upload is under that (accept only: more CPUs")
	line("  than the machine has means the pipeline finished the phase's uploads after the last 202)")
	if c.BulkUploads > 0 {
		line("  bulk:     %d request events published straight to JetStream as fast as it accepts them (as make bench),", c.BulkUploads)
		line("            on the pipeline as deployed: blobwriter, refwriter and ingest, whose read model folds in the")
		line("            bulk path's events as it does the HTTP path's (its API idle)")
	}
	if c.runsChain() {
		r.writeChainLegend(line)
	}
	if c.Floor {
		r.writeFloorLegend(line)
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
			if r.writeStages(w, line, v) {
				line("")
			}
		}
		if c.AcceptClients > 0 {
			r.writeAccept(w, line, v)
			line("")
		}
		r.writeCPU(w, line, v)
		line("")
		if r.writeBatches(w, line, v) {
			line("")
		}
		line("checked after the phases: %d uploads' rows (upload_refs, subject_refs, both step markers) and %d objects", v.Checked.Uploads, v.Checked.Objects)
		line("(size, sha256 of the bytes, sha256 metadata, content type): all whole")
		if len(v.chains()) > 0 {
			line("")
			r.writeChain(w, line, v)
		}
		if len(v.floors()) > 0 {
			line("")
			r.writeFloor(w, line, v)
		}
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
func (v *Variant) accepts() []Level { return v.phases(func(r Round) *Level { return r.Accept }) }

// phases are the phases of picks in the rounds that ran one.
func (v *Variant) phases(pick func(Round) *Level) []Level {
	var out []Level
	for _, r := range v.Rounds {
		if l := pick(r); l != nil {
			out = append(out, *l)
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
	t.Row("  clients", "uploads/s", "p50 ms", "p99 ms", "retries", "ingest peak RSS MiB", "WAL B/upload")
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
			summarize(ls, func(l Level) float64 { return procstat.MiB(l.Peak[pipeline.Ingest]) }).WithSpread("%.1f"),
			summarize(ls, Level.WALPer).WithSpread("%.0f"))
	}
	t.Write(w)
}

// writeStages writes the legs of v's HTTP phases; false when no phase has
// them.
func (r *Report) writeStages(w io.Writer, line func(string, ...any), v *Variant) bool {
	var t texttable.Table
	t.Row(append([]string{"  clients"}, append(legs[:], "uploads")...)...)
	rows := 0
	for i, n := range r.Config.Clients {
		ls := staged(v.levels(i))
		if len(ls) == 0 {
			continue
		}
		row := []string{fmt.Sprintf("  %d", n)}
		for k := range legs {
			row = append(row, summarize(ls, func(l Level) float64 { return ms(l.Stages.Legs[k]) }).WithSpread("%.2f"))
		}
		t.Row(append(row, summarize(ls, func(l Level) float64 { return float64(l.Stages.N) }).WithSpread("%.0f"))...)
		rows++
	}
	if rows == 0 {
		return false
	}
	line("Where an upload's time goes, ms (medians)")
	t.Write(w)
	return true
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

// clientsOf is "1 client" or "n clients".
func clientsOf(n int) string {
	if n == 1 {
		return "1 client"
	}
	return strconv.Itoa(n) + " clients"
}

// formatBytes writes n with the largest binary unit that divides it, or in
// MiB with a fraction.
func formatBytes(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

// elapsed writes d in seconds, or milliseconds below one second.
func elapsed(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}
