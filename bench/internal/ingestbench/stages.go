package ingestbench

import (
	"context"
	"fmt"
	"time"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/stats"
)

// Where an upload's time goes on the HTTP path (issue 10's "count the
// round trips on the critical path"): after each phase the benchmark reads,
// for a sample of its uploads, when JetStream stored each of the upload's
// three events, and splits each upload's time from its first request to its
// 200/201 into four legs at those instants. The stream's timestamps and the
// clients' clock are the same machine's.

// stageSample is how many uploads of a phase have their events read.
const stageSample = 200

// legs name the four legs, in order, by the process each waits on: ingest
// from the first request to the requested event stored (its record and
// publish), blobwriter to the blob_stored event stored, refwriter to the
// completed event stored, and ingest again to the 200/201 (the completion's
// delivery and the answer).
var legs = [4]string{"ingest → requested", "blobwriter → blob_stored", "refwriter → completed", "ingest → 201"}

// Stages are the legs of a phase's uploads.
type Stages struct {
	// N is how many uploads of the sample had all three events in UPLOADS.
	N int
	// Legs are the medians of each leg over them.
	Legs [4]time.Duration
}

// stagesOf reads the events of a sample of recs from the stream of the
// nats-server at url that of names. An upload whose events are not all
// there (a build whose subjects differ) is left out; none found is no
// error.
func stagesOf(ctx context.Context, url string, of load.Events, recs []sent) (Stages, error) {
	var sample []sent
	for i := 0; i < len(recs); i += max(1, len(recs)/stageSample) {
		sample = append(sample, recs[i])
	}
	ids := make([]string, len(sample))
	for i, r := range sample {
		ids[i] = r.id
	}
	at, err := load.StoredAt(ctx, url, of, ids)
	if err != nil {
		return Stages{}, fmt.Errorf("stages: %w", err)
	}
	var each [4][]time.Duration
	for i, r := range sample {
		if at[i][0].IsZero() || at[i][1].IsZero() || at[i][2].IsZero() {
			continue
		}
		marks := []time.Time{r.start, at[i][0], at[i][1], at[i][2], r.done}
		for k := range legs {
			each[k] = append(each[k], marks[k+1].Sub(marks[k]))
		}
	}
	s := Stages{N: len(each[0])}
	if s.N == 0 {
		return s, nil
	}
	for k := range legs {
		s.Legs[k] = stats.Percentiles(each[k], 50)[0]
	}
	return s, nil
}

// staged are the phases of ls that have legs.
func staged(ls []Level) []Level {
	var out []Level
	for _, l := range ls {
		if l.Stages.N > 0 {
			out = append(out, l)
		}
	}
	return out
}
