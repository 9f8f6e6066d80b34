package ingestbench

import (
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/bench/internal/texttable"
)

// Write prints the report as text: the configuration and the machine, then
// a table per phase.
func (r *Report) Write(w io.Writer) error {
	ew := &texttable.ErrWriter{W: w}
	line := func(format string, args ...any) { fmt.Fprintf(ew, format+"\n", args...) }

	line("blobref ingest benchmark: uploads over HTTP through the whole pipeline")
	line("")
	line("command   %s", r.Config.Command)
	line("machine   %s", r.Machine)
	line("tree      %s", r.Source)
	line("pipeline  nats-server %s with JetStream, PostgreSQL %s (a fresh schema), a file:// bucket (a fresh directory);", r.NATSVersion, r.PostgresVersion)
	line("          ingest, blobwriter and refwriter, each its own process, built by %s with -trimpath -ldflags='-s -w'", r.GoVersion)
	except := slices.Clone(r.ServiceEnv)
	if u, err := url.Parse(r.Config.DatabaseURL); err == nil {
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

	if len(r.Memory) > 0 {
		line("")
		r.writeMemory(ew, line)
	}
	if len(r.Throughput) > 0 {
		line("")
		r.writeThroughput(ew, line)
	}
	return ew.Err()
}

func (r *Report) writeMemory(w io.Writer, line func(string, ...any)) {
	line("Memory: one upload at a time, streamed over HTTP from a generator (bodies over ingest's INLINE_THRESHOLD,")
	line("512 KiB by default, travel by claim check); peak RSS (VmHWM of /proc/<pid>/status, reset as the upload")
	line("starts, read once its uploads.completed event arrived) after one unmeasured warm-up upload")
	line("")
	var t texttable.Table
	header := []string{"process", "idle"}
	for _, m := range r.Memory {
		header = append(header, "peak "+formatBytes(m.Size))
	}
	t.Row(append(header, "growth", "target")...)
	for _, name := range programs {
		row := []string{name, mib(r.Memory[0].Before[name])}
		worst := int64(0)
		for _, m := range r.Memory {
			row = append(row, mib(m.Peak[name]))
			worst = max(worst, m.Peak[name])
		}
		growth := r.Memory[len(r.Memory)-1].Peak[name] - r.Memory[0].Peak[name]
		row = append(row, fmt.Sprintf("%+.1f MiB", procstat.MiB(growth)))
		switch name {
		case "ingest", "blobwriter":
			verdict := "met"
			if worst >= TargetPeakRSS {
				verdict = "MISSED"
			}
			row = append(row, fmt.Sprintf("< %s: %s", formatBytes(TargetPeakRSS), verdict))
		default:
			row = append(row, "none")
		}
		t.Row(row...)
	}
	t.Write(w)
	line("")
	var times []string
	for _, m := range r.Memory {
		times = append(times, fmt.Sprintf("%s accepted after %s%s, completed after %s%s", formatBytes(m.Size),
			elapsed(m.Accepted), rate(m.Size, m.Accepted), elapsed(m.Completed), rate(m.Size, m.Completed)))
	}
	line("%s", strings.Join(times, "; "))
	line("(idle: RSS as the first measured upload started; growth: peak at %s minus peak at %s)",
		formatBytes(r.Memory[len(r.Memory)-1].Size), formatBytes(r.Memory[0].Size))
}

// rate is " (N MiB/s)" for size bytes in d, or "" below 64 MiB (too fast to
// mean anything).
func rate(size int64, d time.Duration) string {
	if size < 64<<20 || d <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%.0f MiB/s)", procstat.MiB(size)/d.Seconds())
}

func (r *Report) writeThroughput(w io.Writer, line func(string, ...any)) {
	c := r.Config
	runs := fmt.Sprintf("%d runs", len(r.Throughput))
	if len(r.Throughput) == 1 {
		runs = "1 run"
	}
	line("Throughput: %s of %d uploads of %s from %d concurrent HTTP clients (one Idempotency-Key per upload,",
		runs, c.Uploads, formatBytes(int64(c.UploadSize)), c.Concurrency)
	line("no Prefer); end to end is first request → last uploads.completed.<id> on a core NATS subscription,")
	line("accepted is first request → last 202; latencies from a request's start")
	line("")
	var t texttable.Table
	t.Row("run", "uploads/s end to end", "accepted/s", "accept p50", "accept p99", "completed p50", "completed p99", "elapsed")
	var rates, accepts []float64
	cols := make([][]float64, 5)
	for i, run := range r.Throughput {
		rates, accepts = append(rates, run.Rate()), append(accepts, run.AcceptRate())
		for j, d := range []time.Duration{run.Accept[0], run.Accept[1], run.Complete[0], run.Complete[1], run.Elapsed} {
			cols[j] = append(cols[j], float64(d))
		}
		t.Row(fmt.Sprint(i+1), fmt.Sprintf("%.0f", run.Rate()), fmt.Sprintf("%.0f", run.AcceptRate()),
			elapsed(run.Accept[0]), elapsed(run.Accept[1]), elapsed(run.Complete[0]), elapsed(run.Complete[1]), elapsed(run.Elapsed))
	}
	rs, as := stats.Summarize(rates), stats.Summarize(accepts)
	med := func(j int) string { return elapsed(time.Duration(stats.Summarize(cols[j]).Median)) }
	t.Row("median", fmt.Sprintf("%.0f", rs.Median), fmt.Sprintf("%.0f", as.Median), med(0), med(1), med(2), med(3), med(4))
	t.Row("spread", fmt.Sprintf("±%.1f%% (%.0f…%.0f)", rs.Spread(), rs.Min, rs.Max), fmt.Sprintf("±%.1f%% (%.0f…%.0f)", as.Spread(), as.Min, as.Max))
	t.Write(w)
	line("")
	var peaks []string
	for _, name := range programs {
		var peak int64
		for _, t := range r.Throughput {
			peak = max(peak, t.Peak[name])
		}
		peaks = append(peaks, name+" "+mib(peak))
	}
	line("peak RSS during the runs: %s", strings.Join(peaks, ", "))
	line("(the client runs on the same %d CPUs as the pipeline)", r.Machine.CPUs)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", procstat.MiB(n)) }
