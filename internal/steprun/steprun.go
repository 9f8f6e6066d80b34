// Package steprun forwards to package step (module
// github.com/blobref/blobref/pkg/step), where blobref's consumer runtime
// moved, until every caller imports it from there. Its Step keeps the old
// shape (Consumer, Accepts, Next) and converts to step.Step.
package steprun

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/marker"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// Moved to package step.
type (
	Effect[R any]   = step.Effect[R]
	Item[R any]     = step.Item[R]
	Runner[R any]   = step.Runner[R]
	Probe           = step.Probe
	Options         = step.Options
	Metrics         = step.Metrics
	Outcome         = step.Outcome
	Kind            = step.Kind
	PermanentError  = step.PermanentError
	OutageError     = step.OutageError
	DependencyError = step.DependencyError
)

// Moved to package step.
const (
	Retried             = step.Retried
	Done                = step.Done
	Skipped             = step.Skipped
	Dead                = step.Dead
	DependencyPostgres  = step.DependencyPostgres
	DependencyJetStream = step.DependencyJetStream
)

// Moved to package step.
var (
	Permanent     = step.Permanent
	Conflict      = step.Conflict
	Unavailable   = step.Unavailable
	Dependency    = step.Dependency
	NewMetrics    = step.NewMetrics
	DurableConfig = step.DurableConfig
)

// Step is step.Step in its old shape: the consumer spec, the type it
// accepts and the next event.
type Step[R any] struct {
	Name     string
	Consumer events.ConsumerSpec
	Accepts  string
	Effect   Effect[R]
	InTx     func(ctx context.Context, tx pgx.Tx, items []Item[R]) ([]error, error)
	Next     func(ev *events.Event, r R) (*events.Event, error)
	Probes   map[string]Probe
}

// Step converts s to step.Step.
func (s Step[R]) Step() step.Step[R] {
	return step.Step[R]{
		Name: s.Name, Consumes: s.Accepts, Durable: s.Consumer.Durable,
		Effect: s.Effect, InTx: s.InTx, Emit: s.Next, Probes: s.Probes,
	}
}

// New is step.NewRunner for a Step of the old shape.
func New[R any](js jetstream.JetStream, markers *marker.Store, s Step[R], opts Options) (*Runner[R], error) {
	if markers == nil {
		return nil, fmt.Errorf("steprun: step %s needs a marker store", s.Name)
	}
	st := s.Step()
	spec, err := st.Consumer()
	if err != nil {
		return nil, err
	}
	if s.Consumer.FilterSubject != "" && s.Consumer.FilterSubject != spec.FilterSubject {
		return nil, fmt.Errorf("steprun: step %s: filter %s is not that of %s (%s)", s.Name, s.Consumer.FilterSubject, s.Accepts, spec.FilterSubject)
	}
	return step.NewRunner(js, markers.Pool(), st, opts)
}
