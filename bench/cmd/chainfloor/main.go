// Command chainfloor is the latency floor of make bench-ingest (package
// chainfloor): one of its three roles, a process of its own, so that the
// chain front → store → ref crosses processes as blobref's services do.
// pipelinebench builds it and runs each role configured as the services
// are:
//
//	FLOOR_ROLE    front, store or ref (required)
//	HTTP_ADDR     where the front takes uploads (front only, required)
//	METRICS_ADDR  where GET /readyz answers 200 once it serves (required)
//	DATABASE_URL  Postgres; its search_path is the schema of the floor's tables (required)
//	NATS_URL      nats-server with JetStream (required)
//	BLOB_URL      the bucket (store and ref, required)
//
// It exits on SIGTERM or SIGINT once the work in hand is done.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"

	"github.com/blobref/blobref/bench/internal/chainfloor"
	"github.com/blobref/blobref/bench/internal/floorhttp"
)

// config is the role's settings, read from the environment in one place.
type config struct {
	Role, HTTPAddr, MetricsAddr, DatabaseURL, NATSURL, BlobURL string
}

func configFromEnv() (config, error) {
	c := config{os.Getenv("FLOOR_ROLE"), os.Getenv("HTTP_ADDR"), os.Getenv("METRICS_ADDR"), os.Getenv("DATABASE_URL"),
		os.Getenv("NATS_URL"), os.Getenv("BLOB_URL")}
	required := map[string]string{"FLOOR_ROLE": c.Role, "METRICS_ADDR": c.MetricsAddr, "DATABASE_URL": c.DatabaseURL, "NATS_URL": c.NATSURL}
	switch c.Role {
	case chainfloor.Front:
		required["HTTP_ADDR"] = c.HTTPAddr
	case chainfloor.Store, chainfloor.Ref:
		required["BLOB_URL"] = c.BlobURL
	}
	var errs []error
	for name, v := range required {
		if v == "" {
			errs = append(errs, fmt.Errorf("config: %s is required", name))
		}
	}
	return c, errors.Join(errs...)
}

func main() {
	floorhttp.Main("chainfloor", configFromEnv, func(ctx context.Context, cfg config, log *slog.Logger) error {
		return run(ctx, cfg, log.With("role", cfg.Role))
	})
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("chainfloor-"+cfg.Role))
	if err != nil {
		return err
	}
	defer func() { _ = nc.Drain() }()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := chainfloor.Setup(ctx, pool, js); err != nil {
		return err
	}
	d := chainfloor.Deps{Pool: pool, NC: nc, JS: js, Log: log}
	if cfg.BlobURL != "" {
		if d.Bucket, err = blob.OpenBucket(ctx, cfg.BlobURL); err != nil {
			return err
		}
		defer d.Bucket.Close()
	}
	var lc net.ListenConfig
	if cfg.HTTPAddr != "" {
		if d.HTTP, err = lc.Listen(ctx, "tcp", cfg.HTTPAddr); err != nil {
			return err
		}
	}
	if d.Ready, err = lc.Listen(ctx, "tcp", cfg.MetricsAddr); err != nil {
		if d.HTTP != nil {
			_ = d.HTTP.Close()
		}
		return err
	}
	return chainfloor.Run(ctx, cfg.Role, d)
}
