package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

// Settle returns once ingest's read model has folded in every event the
// pipeline's streams hold: each of its durable consumers has nothing
// pending and nothing unacknowledged. A phase's work ends there, not when
// the last completed event is out: the read model applies its events after
// them (a blob_stored event waits up to its Hold). Without ingest it
// returns at once, and a consumer JetStream does not have (an ingest built
// before the read model) has nothing to wait for. It gives up after
// timeout.
func (p *Pipeline) Settle(ctx context.Context, timeout time.Duration) error {
	if p.Process(Ingest) == nil {
		return nil
	}
	nc, err := nats.Connect(p.NATSURL, nats.Name("bench-settle"))
	if err != nil {
		return fmt.Errorf("pipeline: settle: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("pipeline: settle: %w", err)
	}
	return settle(ctx, js, timeout)
}

// settle waits until the read model's consumers on js have settled; one
// that is not there, or whose stream is not, has nothing to wait for.
func settle(ctx context.Context, js jetstream.JetStream, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, spec := range events.IngestViewConsumers {
		for {
			info, err := consumerInfo(ctx, js, spec)
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
				err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				break
			}
			select {
			case <-ctx.Done():
				if err == nil {
					err = fmt.Errorf("%d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
				}
				return fmt.Errorf("pipeline: ingest's read model (%s) did not settle within %v: %w", spec.Durable, timeout, err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

func consumerInfo(ctx context.Context, js jetstream.JetStream, spec events.ConsumerSpec) (*jetstream.ConsumerInfo, error) {
	c, err := js.Consumer(ctx, spec.StreamOrDefault(), spec.Durable)
	if err != nil {
		return nil, err
	}
	return c.CachedInfo(), nil // as the look-up just read it
}
