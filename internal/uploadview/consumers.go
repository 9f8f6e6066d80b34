package uploadview

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/pkg/events"
)

// ConsumerState is how far a step's durable consumer got.
type ConsumerState struct {
	// Name is the durable's name, Step the step it runs
	// (events.StepBlob or events.StepRef), Filter its subject filter.
	Name   string `json:"name"`
	Step   string `json:"step"`
	Stream string `json:"stream"`
	Filter string `json:"filter"`
	// Pending is how many messages it has yet to deliver: the lag.
	Pending uint64 `json:"pending"`
	// AckPending is how many it delivered and awaits an ack for.
	AckPending int `json:"ackPending"`
	// Redelivered is how many of those were delivered more than once.
	Redelivered int `json:"redelivered"`
	// Waiting is how many pull requests wait for messages.
	Waiting int `json:"waiting"`
	// Delivered and AckFloor are stream sequences: the last delivered and
	// the one below which everything is acked.
	Delivered uint64 `json:"delivered"`
	AckFloor  uint64 `json:"ackFloor"`
	// LastActive is when it last delivered a message.
	LastActive *time.Time `json:"lastActive,omitempty"`
	// MaxDeliver is how many deliveries a message gets before its step
	// dead-letters it; AckWait how long a delivery waits for an ack.
	MaxDeliver int           `json:"maxDeliver"`
	AckWait    time.Duration `json:"ackWaitNs"`
	// Missing says the consumer does not exist (its service never ran, or
	// blobrefctl setup was not run).
	Missing bool `json:"missing,omitempty"`
}

// StreamState is what a stream holds.
type StreamState struct {
	Name      string    `json:"name"`
	Messages  uint64    `json:"messages"`
	Bytes     uint64    `json:"bytes"`
	FirstSeq  uint64    `json:"firstSeq"`
	LastSeq   uint64    `json:"lastSeq"`
	FirstTime time.Time `json:"firstTime"`
	LastTime  time.Time `json:"lastTime"`
	Consumers int       `json:"consumers"`
	Missing   bool      `json:"missing,omitempty"`
}

// Consumers returns the state of each step's durable consumer, blobwriter's
// then refwriter's.
func (v *View) Consumers(ctx context.Context) ([]ConsumerState, error) {
	out := make([]ConsumerState, 0, len(service.Consumers))
	for _, spec := range service.Consumers {
		c := ConsumerState{Name: spec.Durable, Step: spec.Step, Stream: events.StreamName, Filter: spec.FilterSubject}
		cons, err := v.JS.Consumer(ctx, events.StreamName, spec.Durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			c.Missing = true
			out = append(out, c)
			continue
		}
		if err != nil {
			return nil, err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, err
		}
		c.Filter = info.Config.FilterSubject
		c.Pending, c.AckPending, c.Redelivered, c.Waiting = info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting
		c.Delivered, c.AckFloor = info.Delivered.Stream, info.AckFloor.Stream
		c.LastActive = utc(info.Delivered.Last)
		c.MaxDeliver, c.AckWait = info.Config.MaxDeliver, info.Config.AckWait
		out = append(out, c)
	}
	return out, nil
}

// Streams returns what UPLOADS and UPLOADS_DLQ hold.
func (v *View) Streams(ctx context.Context) ([]StreamState, error) {
	var out []StreamState
	for _, name := range []string{events.StreamName, events.DLQStreamName} {
		s := StreamState{Name: name}
		st, err := v.JS.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s.Missing = true
			out = append(out, s)
			continue
		}
		if err != nil {
			return nil, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, err
		}
		s.Messages, s.Bytes, s.Consumers = info.State.Msgs, info.State.Bytes, info.State.Consumers
		s.FirstSeq, s.LastSeq = info.State.FirstSeq, info.State.LastSeq
		s.FirstTime, s.LastTime = info.State.FirstTime.UTC(), info.State.LastTime.UTC()
		out = append(out, s)
	}
	return out, nil
}
