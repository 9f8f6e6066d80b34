// Command httpfloor is the HTTP accept floor of make bench-ingest (package
// acceptfloor): a minimal front door that answers POST with 202 once the
// body is committed to Postgres and stored in JetStream. pipelinebench
// builds it and runs it as a process of its own, configured as the
// services are:
//
//	HTTP_ADDR     where uploads are posted (required)
//	METRICS_ADDR  where GET /readyz answers 200 once it serves (required)
//	DATABASE_URL  Postgres; its search_path is the schema of the floor's table (required)
//	NATS_URL      nats-server with JetStream (required)
//
// It exits on SIGTERM or SIGINT after the requests in flight are answered.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/bench/internal/acceptfloor"
	"github.com/blobref/blobref/bench/internal/floorhttp"
)

// config is the floor's settings, read from the environment in one place.
type config struct {
	HTTPAddr, MetricsAddr, DatabaseURL, NATSURL string
}

func configFromEnv() (config, error) {
	c := config{os.Getenv("HTTP_ADDR"), os.Getenv("METRICS_ADDR"), os.Getenv("DATABASE_URL"), os.Getenv("NATS_URL")}
	var errs []error
	for name, v := range map[string]string{"HTTP_ADDR": c.HTTPAddr, "METRICS_ADDR": c.MetricsAddr, "DATABASE_URL": c.DatabaseURL, "NATS_URL": c.NATSURL} {
		if v == "" {
			errs = append(errs, fmt.Errorf("config: %s is required", name))
		}
	}
	return c, errors.Join(errs...)
}

func main() { floorhttp.Main("httpfloor", configFromEnv, run) }

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("httpfloor"))
	if err != nil {
		return err
	}
	defer func() { _ = nc.Drain() }()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return err
	}
	if err := acceptfloor.Setup(ctx, pool, js); err != nil {
		return err
	}
	var lc net.ListenConfig
	httpLn, err := lc.Listen(ctx, "tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	readyLn, err := lc.Listen(ctx, "tcp", cfg.MetricsAddr)
	if err != nil {
		_ = httpLn.Close()
		return err
	}
	return acceptfloor.Run(ctx, acceptfloor.Deps{Pool: pool, JS: js, HTTP: httpLn, Ready: readyLn, Log: log})
}
