package ingestbench

import (
	"slices"
	"time"

	"github.com/blobref/blobref/bench/internal/pipeline"
)

// Targets of issues 3 and 10.
const (
	TargetPeakRSS      = 64 << 20 // ingest and blobwriter, any upload size; ingest at 256 clients
	TargetRate64       = 2400     // uploads/s referenced at 64 clients
	TargetCPUOfBulk    = 2.0      // HTTP CPU per upload at 64 clients, over the bulk path's
	TargetP50OneClient = 4 * time.Millisecond
	TargetAcceptRate64 = 4000 // uploads/s accepted at 64 clients
)

// level is the rounds' phases of v at clients clients (nil when not
// measured).
func (r *Report) level(v *Variant, clients int) []Level {
	i := slices.Index(r.Config.Clients, clients)
	if i < 0 {
		return nil
	}
	return v.levels(i)
}

// writeTargets says which of the issues' targets v met.
func (r *Report) writeTargets(line func(string, ...any), v *Variant) {
	line("targets (issue 10; reported, never asserted; medians):")
	if ls := r.level(v, 64); len(ls) > 0 {
		x := summarize(ls, Level.Rate).Median
		line("  64 clients with Prefer: wait ≥ %d uploads/s referenced: %.0f, %s", TargetRate64, x, verdict(x >= TargetRate64))
		r.writeBusy(line, ls, TargetRate64)
		if s := r.cpuRatios(v, 64); s.N > 0 {
			line("  HTTP CPU per upload at 64 clients ≤ %.0f× the bulk path's: %.2f×, %s", TargetCPUOfBulk, s.Median, verdict(s.Median <= TargetCPUOfBulk))
		}
	}
	if ls := r.level(v, 1); len(ls) > 0 {
		x := time.Duration(summarize(ls, func(l Level) float64 { return float64(l.Latency[0]) }).Median)
		line("  1 client, p50 request → 201 ≤ %s: %.1f ms, %s", TargetP50OneClient, ms(x), verdict(x <= TargetP50OneClient))
		if floor, ok := v.chainP50(); ok {
			reach := "within reach (the floor is under it)"
			if floor > TargetP50OneClient {
				reach = "OUT OF REACH on this machine (the floor alone is over it)"
			}
			line("    the latency floor's p50 in the same rounds: %.1f ms: %s", ms(floor), reach)
		}
	}
	if ls := v.accepts(); len(ls) > 0 && r.Config.AcceptClients == 64 {
		x := summarize(ls, Level.Rate).Median
		line("  accept only, 64 clients ≥ %d uploads/s accepted: %.0f, %s", TargetAcceptRate64, x, verdict(x >= TargetAcceptRate64))
		r.writeBusy(line, ls, TargetAcceptRate64)
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

// writeBusy says how much CPU the phases ls of a rate target used: the
// whole machine's CPU per upload over a phase (clients and other work
// included, and the work the phase's uploads left for after their last
// answer), the CPUs that figure keeps busy at the rate measured, and the
// CPU per upload the machine's CPUs leave at the target rate. A rate that
// keeps nearly every CPU busy is bound by CPU: it rises only as the CPU per
// upload falls, and the target needs that figure down to the one beside
// it. Medians of the rounds; nothing when the phases were not metered.
func (r *Report) writeBusy(line func(string, ...any), ls []Level, target int) {
	var metered []Level
	for _, l := range ls {
		if l.Usage.Machine > 0 && l.N > 0 && l.Elapsed > 0 {
			metered = append(metered, l)
		}
	}
	cpus := r.Machine.CPUs
	if len(metered) == 0 || cpus <= 0 || target <= 0 {
		return
	}
	per := func(l Level) float64 { return us(l.Usage.Machine / time.Duration(l.N)) }
	busy := func(l Level) float64 { return per(l) * l.Rate() / 1e6 }
	line("    the machine: %.0f µs of CPU per upload in all, %.2f of its %d CPUs at that rate; at %d/s they leave %.0f µs",
		summarize(metered, per).Median, summarize(metered, busy).Median, cpus, target, float64(cpus)*1e6/float64(target))
}
