// Command ingest is blobref's HTTP front door: it turns an upload sent over
// HTTP into the pipeline's request event, and makes a client's retry with
// the same Idempotency-Key resume the operation instead of repeating it.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/pkg/step/stepservice"
	"github.com/blobref/blobref/services/ingest/internal/api"
	"github.com/blobref/blobref/services/ingest/internal/auth"
	"github.com/blobref/blobref/services/ingest/internal/readmodel"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// poolConns is the size of the Postgres pool, unless DATABASE_URL sets
// pool_max_conns. No connection is held while a body streams in: a request
// uses one for a round trip at a time, and batches share them.
const poolConns = 8

// gcMinHeap is ingest's GC_MIN_HEAP unless set: higher than the consumers'
// (stepservice.DefaultGCMinHeap). Ingest allocates more per upload than
// they do (the request, the batch's statement, the events it reads back)
// while keeping little live, so at moderate load its collector ran most
// often: at 24 MiB it took 5–8% off ingest's CPU per upload at 64 clients
// (3–5% off the whole path's), for about 8 MiB more RSS where little is
// live and 1 MiB at 256 clients, where the live heap sets the goal anyway
// (docs/benchmarks.md, the sixteenth session).
const gcMinHeap = 24 << 20

func main() { stepservice.Main("ingest", defaults(), run) }

// defaults is the configuration before the environment is read.
func defaults() *config {
	return &config{Config: stepservice.Config{MetricsAddr: ":9100", GCMinHeap: gcMinHeap}}
}

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	tokens, err := auth.Load(cfg.AuthTokens, cfg.AuthTokensFile)
	if err != nil {
		return err
	}
	if cfg.AuthAllowWeakTokens {
		warnWeakTokens(log, tokens)
	}
	allowed, err := api.ParseMediaTypes(cfg.AllowedContentTypes)
	if err != nil {
		return err
	}
	pool, err := stepservice.OpenPostgres(ctx, cfg.DatabaseURL, poolConns, dbschema.Migrate, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	tp, stopTracing, err := stepservice.StartTracing(ctx, cfg.Tracing, "ingest", log)
	if err != nil {
		return err
	}
	defer stepservice.StopTracing(stopTracing, log)
	nc, err := stepservice.ConnectNATS(ctx, cfg.NATS, "ingest", log)
	if err != nil {
		return err
	}
	defer drain(nc, log)
	if max := nc.MaxPayload(); int64(cfg.InlineThreshold)+headerRoom > max {
		return fmt.Errorf("config: INLINE_THRESHOLD: %d bytes plus headers exceed the server's max_payload of %d", cfg.InlineThreshold, max)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return err
	}

	reg := stepservice.NewRegistry()
	apiMetrics, err := api.NewMetrics(reg)
	if err != nil {
		return err
	}
	uploadMetrics, err := uploads.NewMetrics(reg)
	if err != nil {
		return err
	}
	completerMetrics, err := uploads.NewCompleterMetrics(reg)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	ops := &stepservice.Ops{Addr: cfg.MetricsAddr, Registry: reg, Ready: ready, Pprof: cfg.Pprof, Checks: map[string]stepservice.Check{
		"nats": stepservice.NATSCheck(nc), "postgres": stepservice.PostgresCheck(pool),
	}}
	staging := &claimcheck.Staging{JS: js, Bucket: cfg.StagingBucket, TTL: cfg.StagingTTL, Replicas: cfg.StreamReplicas,
		MaxBytes: cfg.StagingMaxBytes, LookUp: cfg.NATSSetup == stepservice.SetupOff}
	svc := &uploads.Service{
		Pool: uploads.BoundedPool(pool, cfg.DatabaseAcquireTimeout), NC: nc, JS: js, Staging: staging,
		Quota:           &uploads.StagedQuota{Limit: int64(cfg.CallerMaxStagedBytes), Hold: cfg.CallerStagedHold},
		InlineThreshold: int(cfg.InlineThreshold), RedriveAfter: cfg.RedriveAfter, Metrics: uploadMetrics,
		TracerProvider: tp,
	}
	completer := &uploads.Completer{Service: svc, Interval: cfg.CompleterInterval, Horizon: cfg.CompleterHorizon,
		Metrics: completerMetrics, Logger: log}
	projector := &readmodel.Projector{Pool: pool, JS: js, LookUp: cfg.NATSSetup == stepservice.SetupOff, Logger: log}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ops.Run(gctx) })
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error {
		select { // once the streams are there
		case <-ready:
			return projector.Run(gctx)
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error {
		select { // once the streams and the staging bucket are there
		case <-ready:
			return completer.Run(gctx)
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error {
		if err := stepservice.SetUpStreams(gctx, js, cfg.NATSSetup, cfg.StreamOptions(), log); err != nil {
			return err
		}
		what := "set up staging bucket"
		if staging.LookUp {
			what = "look up staging bucket " + cfg.StagingBucket + " (NATS_SETUP=off: `blobrefctl setup` creates it)"
		}
		if err := stepservice.Retry(gctx, log, what, func() error { return staging.Ensure(gctx) }); err != nil {
			return err
		}
		select {
		case <-svc.Started():
		case <-gctx.Done():
			return nil
		}
		h := api.New(api.Options{
			Uploads: svc, Tokens: tokens, MaxUploadSize: int64(cfg.MaxUploadSize), AllowedTypes: allowed,
			WaitMax: cfg.WaitMax, Metrics: apiMetrics, Logger: log, ReadHeaderTimeout: cfg.ReadHeaderTimeout,
			TracerProvider: tp,
			Body:           api.BodyTimeouts{Idle: cfg.BodyReadTimeout, MinRate: int64(cfg.BodyMinRate)},
			Limits:         api.CallerLimits{MaxConcurrent: cfg.CallerMaxConcurrent, Rate: cfg.CallerRate, Burst: cfg.CallerBurst},
		})
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("api: %w", err)
		}
		close(ready)
		log.Info("started", "http_addr", ln.Addr().String(), "staging_bucket", cfg.StagingBucket, "tokens", tokens.Len())
		return api.Serve(gctx, ln, h, cfg.ShutdownTimeout)
	})
	return g.Wait()
}

// warnWeakTokens says, once at start-up, that AUTH_ALLOW_WEAK_TOKENS is
// set, and where the weak tokens are configured (never the tokens).
func warnWeakTokens(log *slog.Logger, tokens *auth.Tokens) {
	if weak := tokens.Weak(); weak != nil {
		log.Warn("serving with weak tokens (AUTH_ALLOW_WEAK_TOKENS=true): for a development machine only", "weak", weak.Error())
		return
	}
	log.Warn("AUTH_ALLOW_WEAK_TOKENS=true: ingest would start with weak tokens; for a development machine only")
}

// drain drains nc, which flushes what is pending, and waits a while for it
// to close.
func drain(nc *nats.Conn, log *slog.Logger) {
	if err := nc.Drain(); err != nil {
		log.Warn("nats drain", "error", err)
		nc.Close()
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nc.Close()
}
