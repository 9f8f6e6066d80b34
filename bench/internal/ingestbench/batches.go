package ingestbench

import (
	"context"
	"fmt"
	"io"

	dto "github.com/prometheus/client_model/go"

	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/bench/internal/texttable"
	"github.com/blobref/blobref/pkg/events"
)

// A batch's round trips cost the same however few messages it carries, so
// how full the batches run is much of what separates a phase's CPU per
// upload from the bulk path's. Each service counts its batches in a
// histogram; a phase's mean batch is what the histogram gained over it.

// batchHistogram names the histogram of a service's batch sizes: ingest's
// requests recorded and published together, a step's messages handed to a
// worker together.
type batchHistogram struct {
	service, metric, step string
}

// batchHistograms are the services' batch histograms, in the report's
// order.
var batchHistograms = []batchHistogram{
	{pipeline.Ingest, "blobref_ingest_batch_size", ""},
	{pipeline.BlobWriter, "blobref_step_batch_messages", events.StepBlob},
	{pipeline.RefWriter, "blobref_step_batch_messages", events.StepRef},
}

// batchTally is a histogram's sum and count at one moment.
type batchTally struct{ sum, count float64 }

// readBatches reads the batch histograms of p's services that serve them
// (an older build may not).
func readBatches(ctx context.Context, p *pipeline.Pipeline) (map[string]batchTally, error) {
	out := map[string]batchTally{}
	for _, h := range batchHistograms {
		proc := p.Process(h.service)
		if proc == nil {
			continue
		}
		families, err := proc.Metrics(ctx)
		if err != nil {
			return nil, fmt.Errorf("ingestbench: batches: %w", err)
		}
		if t, ok := tallyOf(families[h.metric], h.step); ok {
			out[h.service] = t
		}
	}
	return out, nil
}

// tallyOf is the sum and count of histogram family f's series for step
// (any series when step is "").
func tallyOf(f *dto.MetricFamily, step string) (batchTally, bool) {
	if f == nil {
		return batchTally{}, false
	}
	for _, m := range f.GetMetric() {
		if step != "" && labelOf(m, "step") != step {
			continue
		}
		if h := m.GetHistogram(); h != nil {
			return batchTally{sum: h.GetSampleSum(), count: float64(h.GetSampleCount())}, true
		}
	}
	return batchTally{}, false
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// meanBatches are the mean batch of each service between two readings,
// for the services that ran a batch in between.
func meanBatches(before, after map[string]batchTally) map[string]float64 {
	out := map[string]float64{}
	for name, a := range after {
		b := before[name]
		if n := a.count - b.count; n > 0 {
			out[name] = (a.sum - b.sum) / n
		}
	}
	return out
}

// writeBatches writes the mean batches of v's phases, when any service
// reported them.
func (r *Report) writeBatches(w io.Writer, line func(string, ...any), v *Variant) bool {
	rows := r.batchRows(v)
	if len(rows) == 0 {
		return false
	}
	line("Mean messages per batch, by service (ingest: requests recorded and published together; blobwriter and")
	line("refwriter: messages handed to a worker together), from the services' histograms over each phase")
	var t texttable.Table
	head := []string{"  phase"}
	for _, h := range batchHistograms {
		head = append(head, h.service)
	}
	t.Row(head...)
	for _, row := range rows {
		cells := []string{"  " + row.label}
		for _, h := range batchHistograms {
			var values []float64
			for _, m := range row.means {
				if x, ok := m[h.service]; ok {
					values = append(values, x)
				}
			}
			cells = append(cells, medianCell(stats.Summarize(values), "%.1f"))
		}
		t.Row(cells...)
	}
	t.Write(w)
	return true
}

// batchRow is one phase's mean batches, by round.
type batchRow struct {
	label string
	means []map[string]float64
}

// batchRows are v's phases that have mean batches: each HTTP phase,
// accept only, and bulk.
func (r *Report) batchRows(v *Variant) []batchRow {
	var rows []batchRow
	add := func(label string, get func(Round) map[string]float64) {
		row := batchRow{label: label}
		for _, rd := range v.Rounds {
			if m := get(rd); len(m) > 0 {
				row.means = append(row.means, m)
			}
		}
		if len(row.means) > 0 {
			rows = append(rows, row)
		}
	}
	for i, clients := range r.Config.Clients {
		add("HTTP, "+clientsOf(clients), func(rd Round) map[string]float64 {
			if i >= len(rd.Levels) {
				return nil
			}
			return rd.Levels[i].Batches
		})
	}
	add("accept only, "+clientsOf(r.Config.AcceptClients), func(rd Round) map[string]float64 {
		if rd.Accept == nil {
			return nil
		}
		return rd.Accept.Batches
	})
	add("bulk, JetStream", func(rd Round) map[string]float64 { return rd.BulkBatches })
	return rows
}
