package ingestbench

import (
	"fmt"
	"io"
	"slices"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/texttable"
)

// The variants side by side: the medians of the rounds of each, and the
// last one's over the first one's.

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
				s := r.cpuRatios(v, clients)
				return s.Median, s.N > 0
			}},
			figure{"HTTP, " + clientsOf(clients) + ": WAL bytes/upload", "%.0f", func(v *Variant) (float64, bool) {
				return med(r.level(v, clients), Level.WALPer)
			}},
		)
	}
	if len(r.Config.Clients) > 0 {
		// The legs of the fewest clients' uploads: one client's are its
		// round trips, not its queues.
		clients := slices.Min(r.Config.Clients)
		for k, leg := range legs {
			out = append(out, figure{"HTTP, " + clientsOf(clients) + ", ms: " + leg, "%.2f", func(v *Variant) (float64, bool) {
				return med(staged(r.level(v, clients)), func(l Level) float64 { return ms(l.Stages.Legs[k]) })
			}})
		}
	}
	if _, ok := r.Variants[0].chainP50(); ok {
		// The same programs in every variant's turn: how far the machine
		// moved between the turns, and the 1-client p50 measured against it.
		out = append(out,
			figure{"latency floor, 1 client: p50 ms", "%.1f", func(v *Variant) (float64, bool) {
				p, ok := v.chainP50()
				return ms(p), ok
			}},
			figure{"HTTP, 1 client: p50 over the latency floor's", "%.2f", func(v *Variant) (float64, bool) {
				p50, floor, ok := r.oneClientAndFloor(v)
				return float64(p50) / float64(floor), ok
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
	if r.Config.Floor {
		out = append(out,
			figure{"accept floor, " + clientsOf(r.Config.FloorClients()) + ": accepted/s", "%.0f", func(v *Variant) (float64, bool) {
				return med(v.floors(), Level.Rate)
			}},
			figure{"accept floor: CPU µs/upload", "%.0f", func(v *Variant) (float64, bool) {
				return med(v.floors(), func(l Level) float64 { return us(floorCost(l.Usage, l.N)) })
			}},
			figure{"HTTP CPU floor × bulk", "%.2f", func(v *Variant) (float64, bool) {
				return medCeiling(r.ceilings(v), func(c ceiling) float64 { return c.ratio })
			}},
			figure{"referenced ceiling, uploads/s", "%.0f", func(v *Variant) (float64, bool) {
				return medCeiling(r.ceilings(v), func(c ceiling) float64 { return c.referenced })
			}},
		)
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
	if _, chain := first.chainP50(); chain || r.Config.Floor {
		line("The floors run the same programs in every variant's turn: where their figures differ, the machine")
		line("moved between the turns, and a difference of that size between the variants' own figures says nothing")
	}
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

// medCeiling is the median of f over cs, false for none.
func medCeiling(cs []ceiling, f func(ceiling) float64) (float64, bool) {
	if len(cs) == 0 {
		return 0, false
	}
	return summarize(cs, f).Median, true
}
