// Package acceptfloor is the HTTP accept floor of the ingest benchmark: the
// least an HTTP front door must do per upload to answer 202 under
// blobref's accept contract (the request is durable in Postgres and stored
// in JetStream before the answer). It reads the body, records (id, body)
// in Postgres with group commit across concurrent requests (one multi-row
// INSERT per batch of whatever requests are waiting, one round trip), and
// publishes the body to a JetStream stream of its own with an asynchronous
// publish and its acknowledgement, both at once; then it answers 202.
//
// It is deliberately cheaper than ingest: no authentication, no JSON, no
// CloudEvent, no idempotency (no key look-up, no JetStream de-duplication
// header), no outbox update after the publish, no logging per request. The
// httpfloor command runs it as a process of its own, so that its CPU is
// read from /proc as the services' is.
package acceptfloor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/blobref/blobref/bench/internal/floorhttp"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

// Where the floor keeps what it accepted.
const (
	// Table is its table, in the schema of the connection's search_path.
	Table = "floor_uploads"
	// StreamName is its stream, SubjectPrefix+id the subject of each body.
	StreamName    = "FLOOR"
	SubjectPrefix = "floor."
)

// MaxBody is the largest body the floor accepts; a larger one gets 413.
const MaxBody = floorhttp.MaxBody

// shutdownTimeout bounds the HTTP server's graceful shutdown.
const shutdownTimeout = 10 * time.Second

// Deps are what the floor runs on, built by its caller.
type Deps struct {
	// Pool is the Postgres pool; its search_path names the schema of Table.
	Pool *pgxpool.Pool
	// JS publishes to the floor's stream.
	JS jetstream.JetStream
	// HTTP listens for uploads (POST to any path); Ready for GET /readyz.
	HTTP, Ready net.Listener
	Log         *slog.Logger
}

// Setup creates the floor's table and stream unless they exist. The
// table keeps a body of up to 8 KB in its row, as ingest's does, so that
// Postgres neither compresses nor TOASTs a 4 KiB body.
func Setup(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream) error {
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+Table+` (
		id text PRIMARY KEY,
		body bytea NOT NULL
	) WITH (toast_tuple_target = 8160)`); err != nil {
		return fmt.Errorf("acceptfloor: create table: %w", err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew, Replicas: 1,
	}); err != nil {
		return fmt.Errorf("acceptfloor: create stream: %w", err)
	}
	return nil
}

// Run serves uploads on d.HTTP and readiness on d.Ready until ctx ends,
// then stops taking requests, lets those in flight finish, and stops the
// recorder. Call Setup first.
func Run(ctx context.Context, d Deps) error {
	rec := NewRecorder(d.Pool)
	h := &handler{rec: rec, js: d.JS, ids: floorhttp.NewIDs(), log: d.Log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /", h.accept)
	ready := http.NewServeMux()
	ready.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	// The recorder outlives the HTTP server: requests in flight at the
	// shutdown still wait for their batch.
	rctx, stopRecorder := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRecorder()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rec.Run(rctx) })
	g.Go(func() error {
		defer stopRecorder()
		return serve(gctx, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, d.HTTP)
	})
	g.Go(func() error {
		return serve(gctx, &http.Server{Handler: ready, ReadHeaderTimeout: 10 * time.Second}, d.Ready)
	})
	return g.Wait()
}

// serve runs srv on ln until ctx ends, then shuts it down gracefully.
func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	if err := stepservice.ServeUntil(ctx, srv, ln, shutdownTimeout, nil); err != nil {
		return fmt.Errorf("acceptfloor: serve: %w", err)
	}
	return nil
}
