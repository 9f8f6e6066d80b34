package ingestbench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/pkg/events"
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

// eventsOf names where an upload's three events are stored: a stream, and
// the subjects of upload id's requested, stored and completed events.
type eventsOf struct {
	stream   string
	subjects func(id string) [3]string
}

// pipelineEvents are blobref's: the UPLOADS stream.
var pipelineEvents = eventsOf{events.StreamName, func(id string) [3]string {
	return [3]string{events.RequestedSubject(id), events.BlobStoredSubject(id), events.CompletedSubject(id)}
}}

// stagesOf reads the events of a sample of recs from the stream of the
// nats-server at url that of names. An upload whose events are not all
// there (a build whose subjects differ) is left out; none found is no
// error.
func stagesOf(ctx context.Context, url string, of eventsOf, recs []sent) (Stages, error) {
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return Stages{}, fmt.Errorf("stages: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return Stages{}, fmt.Errorf("stages: %w", err)
	}
	stream, err := js.Stream(ctx, of.stream)
	if err != nil {
		return Stages{}, fmt.Errorf("stages: %w", err)
	}
	stored := func(subject string) (time.Time, bool, error) {
		m, err := stream.GetLastMsgForSubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return time.Time{}, false, nil
		case err != nil:
			return time.Time{}, false, fmt.Errorf("stages: %s: %w", subject, err)
		}
		return m.Time, true, nil
	}
	var each [4][]time.Duration
	step := max(1, len(recs)/stageSample)
	for i := 0; i < len(recs); i += step {
		r := recs[i]
		var at [3]time.Time
		found := true
		for k, subject := range of.subjects(r.id) {
			t, ok, err := stored(subject)
			if err != nil {
				return Stages{}, err
			}
			at[k], found = t, found && ok
		}
		if !found {
			continue
		}
		marks := []time.Time{r.start, at[0], at[1], at[2], r.done}
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
