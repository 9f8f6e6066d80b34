package stepservice

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/blobref/blobref/pkg/step"
)

// Deps are the clients a consumer builds its step from.
type Deps struct {
	JS   jetstream.JetStream
	Pool *pgxpool.Pool
	Log  *slog.Logger
}

// RunOption tunes Run.
type RunOption func(*runOptions)

type runOptions struct {
	migrate func(context.Context, *pgxpool.Pool) error
}

// WithMigrate makes Run migrate the database with migrate instead of
// step.Migrate: a service whose schema holds tables of its own migrates
// them and the step tables together.
func WithMigrate(migrate func(context.Context, *pgxpool.Pool) error) RunOption {
	return func(o *runOptions) { o.migrate = migrate }
}

// Run runs a consumer service named name until ctx is done: it opens
// Postgres (migrating the schema), connects to NATS, sets up the streams,
// builds the step with build and runs it under a step runner, with the ops
// server beside it. With NATS_SETUP=off it creates neither the streams nor
// its durable consumer: it waits until blobrefctl setup did. Shutdown stops
// fetching, finishes in-flight messages (within SHUTDOWN_TIMEOUT, see
// ShutdownGrace), drains the NATS connection and then closes the pool.
func Run[R any](ctx context.Context, name string, cfg *Config, cc *ConsumerConfig, log *slog.Logger,
	build func(Deps) (step.Step[R], error), opts ...RunOption) error {
	o := runOptions{migrate: step.Migrate}
	for _, opt := range opts {
		opt(&o)
	}
	// Each batch in flight holds one connection for its claims while its
	// side effects run; a few more serve marker look-ups and readiness.
	pool, err := OpenPostgres(ctx, cfg.DatabaseURL, int32(cc.RunnerOptions().MaxBatches()+4), o.migrate, log) // #nosec G115 -- MaxBatches is at most 16
	if err != nil {
		return err
	}
	defer pool.Close()
	tp, stopTracing, err := StartTracing(ctx, cfg.Tracing, name, log)
	if err != nil {
		return err
	}
	defer StopTracing(stopTracing, log)
	nc, err := ConnectNATS(ctx, cfg.NATS, name, log)
	if err != nil {
		return err
	}
	defer nc.Drain() //nolint:errcheck // best effort on the way out
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return err
	}

	reg := NewRegistry()
	ready := make(chan struct{})
	var down atomic.Pointer[func() []string] // the runner's, once it exists
	ops := &Ops{Addr: cfg.MetricsAddr, Registry: reg, Ready: ready, Pprof: cfg.Pprof, Checks: map[string]Check{
		"nats": NATSCheck(nc), "postgres": PostgresCheck(pool),
	}, Down: func() []string {
		if f := down.Load(); f != nil {
			return (*f)()
		}
		return nil
	}}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ops.Run(gctx) })
	g.Go(func() error {
		if err := SetUpStreams(gctx, js, cfg.NATSSetup, cfg.StreamOptions(), log); err != nil {
			return err
		}
		s, err := build(Deps{JS: js, Pool: pool, Log: log})
		if err != nil {
			return err
		}
		metrics, err := step.NewMetrics(reg)
		if err != nil {
			return err
		}
		opts := cc.RunnerOptions()
		opts.ShutdownGrace = ShutdownGrace(cfg.ShutdownTimeout)
		opts.Logger, opts.Metrics = log, metrics
		opts.TracerProvider = tp
		opts.LookUpConsumer = cfg.NATSSetup == SetupOff
		runner, err := step.NewRunner(js, pool, s, opts)
		if err != nil {
			return err
		}
		unavailable := runner.Unavailable
		down.Store(&unavailable)
		close(ready)
		log.Info("started", "step", s.Name, "consumer", runner.ConsumerConfig().Durable, "concurrency", opts.Concurrency,
			"batch_size", opts.BatchSize, "max_in_flight", opts.MaxInFlight)
		return runner.Run(gctx)
	})
	return g.Wait()
}

// StepConfig is the configuration of a consumer service that has no
// settings of its own: Config and ConsumerConfig.
type StepConfig struct {
	Config
	ConsumerConfig
}

// Validate names each bad setting.
func (c *StepConfig) Validate() error {
	return errors.Join(c.Config.Validate(), c.ConsumerConfig.Validate())
}

// MainStep is the whole main of a consumer service named name that has no
// settings of its own: it reads StepConfig from the environment and runs
// the step build returns (see Main and Run).
func MainStep[R any](name string, build func(Deps) (step.Step[R], error), opts ...RunOption) {
	Main(name, &StepConfig{}, func(ctx context.Context, cfg *StepConfig, log *slog.Logger) error {
		return Run(ctx, name, &cfg.Config, &cfg.ConsumerConfig, log, build, opts...)
	})
}
