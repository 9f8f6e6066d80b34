package load

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/bench/internal/stats"
	"github.com/blobref/blobref/pkg/events"
)

// Where an upload's time goes: when JetStream stored each of its three
// events (requested, blob_stored, completed) splits its time through the
// pipeline into the leg each consumer's process took. The stream's own
// timestamps are read afterwards, so the measurement costs the run nothing.

// Events names where uploads' three events are stored: a stream, and the
// subjects of upload id's requested, stored and completed events.
type Events struct {
	Stream   string
	Subjects func(id string) [3]string
}

// PipelineEvents are blobref's (and the floors'): the UPLOADS stream.
var PipelineEvents = Events{events.StreamName, func(id string) [3]string {
	return [3]string{events.RequestedSubject(id), events.BlobStoredSubject(id), events.CompletedSubject(id)}
}}

// StoredAt reads the whole stream of the nats-server at url that of names,
// once, in order, up to the last message it held when the read began, and returns when it stored each event of each upload of
// ids: at[i][k] is event k (requested, stored, completed) of ids[i], the
// first such message if there are several, zero if there is none.
func StoredAt(ctx context.Context, url string, of Events, ids []string) ([][3]time.Time, error) {
	type slot struct{ i, k int }
	want := make(map[string]slot, 3*len(ids))
	for i, id := range ids {
		for k, subject := range of.Subjects(id) {
			want[subject] = slot{i, k}
		}
	}
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("load: stored: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("load: stored: %w", err)
	}
	stream, err := js.Stream(ctx, of.Stream)
	if err != nil {
		return nil, fmt.Errorf("load: stored: %w", err)
	}
	at := make([][3]time.Time, len(ids))
	if stream.CachedInfo().State.Msgs == 0 {
		return at, nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("load: stored: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return nil, fmt.Errorf("load: stored: %w", err)
	}
	defer it.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		msg, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("load: stored: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("load: stored: %w", err)
		}
		if s, ok := want[msg.Subject()]; ok && at[s.i][s.k].IsZero() {
			at[s.i][s.k] = md.Timestamp
		}
		if md.NumPending == 0 { // the last message the stream held
			return at, nil
		}
	}
}

// Legs are the two consumers' legs of a set of uploads: from the requested
// event stored to the blob_stored event stored (blobwriter's: delivery,
// batch, claim, object, marker, publish), and from there to the completed
// event stored (refwriter's); each p50, p99 and max over the uploads whose
// three events were all found.
type Legs struct {
	N          int
	Store, Ref [3]time.Duration
}

// LegsOf reads the legs of ids' uploads from the stream at url (see
// StoredAt).
func LegsOf(ctx context.Context, url string, of Events, ids []string) (Legs, error) {
	at, err := StoredAt(ctx, url, of, ids)
	if err != nil {
		return Legs{}, err
	}
	var store, ref []time.Duration
	for _, t := range at {
		if t[0].IsZero() || t[1].IsZero() || t[2].IsZero() {
			continue
		}
		store, ref = append(store, t[1].Sub(t[0])), append(ref, t[2].Sub(t[1]))
	}
	l := Legs{N: len(store)}
	if l.N == 0 {
		return l, nil
	}
	copy(l.Store[:], stats.Percentiles(store, 50, 99, 100))
	copy(l.Ref[:], stats.Percentiles(ref, 50, 99, 100))
	return l, nil
}
