package ingestbench

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/bench/internal/texttable"
)

// costed are the processes whose CPU an upload costs blobref, in the
// report's order; the bench client is the caller's.
var costed = []string{pipeline.Ingest, pipeline.BlobWriter, pipeline.RefWriter, pipeline.NATSServer, pipeline.Postgres}

// cost is the CPU time per upload of the costed processes of usage over n
// uploads.
func cost(u procstat.Usage, n int) time.Duration { return perUpload(u, n, costed) }

// perUpload is the CPU time per upload of the processes names of usage
// over n uploads, together.
func perUpload(u procstat.Usage, n int, names []string) time.Duration {
	var sum time.Duration
	for _, name := range names {
		sum += u.Per(name, n).Total()
	}
	return sum
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

// cpuRatios are the rounds' CPU ratios of the HTTP path at clients clients
// to the same round's bulk path.
func (r *Report) cpuRatios(v *Variant, clients int) stats.Summary {
	i := slices.Index(r.Config.Clients, clients)
	var ratios []float64
	for _, rd := range v.Rounds {
		if i >= 0 && i < len(rd.Levels) {
			if x, ok := ratio(rd.Levels[i].Usage, rd.Levels[i].N, rd.Bulk); ok {
				ratios = append(ratios, x)
			}
		}
	}
	return stats.Summarize(ratios)
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
	r.writePostgresParts(w, line, v)
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

// pgServices are the services whose connections the Postgres column is
// split by, in the report's order.
var pgServices = []string{pipeline.Ingest, pipeline.BlobWriter, pipeline.RefWriter}

// writePostgresParts splits the Postgres column of the CPU table by the
// service whose connections the backends served: what each service's
// statements cost Postgres.
func (r *Report) writePostgresParts(w io.Writer, line func(string, ...any), v *Variant) {
	rows := r.costRows(v)
	var t texttable.Table
	t.Row(append([]string{"  phase"}, pgServices...)...)
	found := false
	for _, row := range rows {
		cells := []string{"  " + row.label}
		for _, svc := range pgServices {
			s := row.median(func(u procstat.Usage, n int, _ *load.Phase) (float64, bool) {
				part, ok := u.Parts[pipeline.Postgres][svc]
				return us(part.Per(n).Total()), ok
			})
			found = found || s.N > 0
			cells = append(cells, medianCell(s, "%.0f"))
		}
		t.Row(cells...)
	}
	if !found {
		return
	}
	line("postgres, by the service whose connections its backends served (CPU µs per upload)")
	t.Write(w)
}
