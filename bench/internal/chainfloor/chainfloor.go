// Package chainfloor is the latency floor of the ingest benchmark: the
// least a chain of three processes does, one after another, to take one
// upload from its HTTP request to a 201 under blobref's contract, with the
// same round trips on that path as blobref's and nothing else:
//
//   - front (ingest's part): reads the body, inserts (id, body) into
//     Postgres (one round trip, one commit), publishes the request to
//     JetStream with its Nats-Msg-Id and awaits the ack, then waits for
//     the upload's completed message on a core NATS subscription made
//     before it publishes, and answers 201;
//   - store (blobwriter's): its durable pull consumer delivers the
//     request; it claims the upload and looks its marker up (one round
//     trip: a session advisory lock and an EXISTS), writes the bytes to
//     the bucket with IfNotExist and their sha256 in the metadata, records
//     its marker and gives the claim up (one round trip, one commit),
//     publishes the stored message and awaits the ack, then acks;
//   - ref (refwriter's): its consumer delivers the stored message; it
//     reads the object's attributes, inserts the reference row and its
//     marker in one transaction (one round trip), publishes the completed
//     message and awaits the ack, then acks.
//
// Each runs one message at a time. There is no JSON, CloudEvent, event
// check, retry policy, dead letter, batching, metrics, logging per upload,
// tracing, read model, outbox update or completer: what blobref does
// beyond the floor is its own cost. The chainfloor command runs each role
// as a process of its own, as blobref runs its services, so that the
// wake-ups between processes are on the path as they are in blobref's.
package chainfloor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gocloud.dev/blob"

	"github.com/blobref/blobref/pkg/step/stepservice"
)

// Where the floor keeps what it does.
const (
	// Uploads, Markers and Refs are its tables, in the schema of the
	// connection's search_path.
	Uploads = "chain_uploads"
	Markers = "chain_markers"
	Refs    = "chain_refs"
	// StreamName is its stream; the subjects of an upload's three
	// messages are these prefixes and its id.
	StreamName      = "CHAIN"
	RequestedPrefix = "chain.requested."
	StoredPrefix    = "chain.stored."
	CompletedPrefix = "chain.completed."
	// KeyPrefix+id is the object key of an upload.
	KeyPrefix = "uploads/"
)

// Roles: the three processes of the chain.
const (
	Front = "front"
	Store = "store"
	Ref   = "ref"
)

// consumerOf is the durable consumer of each consuming role, and the
// subjects it takes.
var consumerOf = map[string]jetstream.ConsumerConfig{
	Store: {Durable: "chain-store", FilterSubject: RequestedPrefix + "*", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second},
	Ref:   {Durable: "chain-ref", FilterSubject: StoredPrefix + "*", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second},
}

// WaitTimeout is how long the front waits for an upload's completion
// before it answers 504.
const WaitTimeout = 30 * time.Second

// shutdownTimeout bounds the HTTP servers' graceful shutdown.
const shutdownTimeout = 10 * time.Second

// Deps are what a role runs on, built by its caller.
type Deps struct {
	// Pool is the Postgres pool; its search_path names the tables' schema.
	Pool *pgxpool.Pool
	// NC is the NATS connection JS is made on.
	NC *nats.Conn
	JS jetstream.JetStream
	// Bucket holds the objects (store, ref).
	Bucket *blob.Bucket
	// HTTP listens for uploads (front: POST to any path); Ready for GET
	// /readyz (every role).
	HTTP, Ready net.Listener
	Log         *slog.Logger
}

// setupLock serializes Setup across the roles, which start at once.
const setupLock = 7_245_311

// Setup creates the floor's tables, stream and consumers unless they
// exist. The uploads table keeps a body of up to 8 KB in its row, as
// ingest's does.
func Setup(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("chainfloor: setup: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, stmt := range []string{
		fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", setupLock),
		`CREATE TABLE IF NOT EXISTS ` + Uploads + ` (id text PRIMARY KEY, body bytea NOT NULL) WITH (toast_tuple_target = 8160)`,
		`CREATE TABLE IF NOT EXISTS ` + Markers + ` (step text NOT NULL, id text NOT NULL, PRIMARY KEY (step, id))`,
		`CREATE TABLE IF NOT EXISTS ` + Refs + ` (id text PRIMARY KEY, key text NOT NULL, size bigint NOT NULL)`,
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("chainfloor: setup: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("chainfloor: setup: %w", err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{"chain.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew, Replicas: 1,
	}); err != nil {
		return fmt.Errorf("chainfloor: create stream: %w", err)
	}
	for _, role := range []string{Store, Ref} {
		if _, err := js.CreateOrUpdateConsumer(ctx, StreamName, consumerOf[role]); err != nil {
			return fmt.Errorf("chainfloor: create consumer %s: %w", consumerOf[role].Durable, err)
		}
	}
	return nil
}

// Run runs role until ctx ends: it serves readiness on d.Ready, and the
// role's work (the front's uploads on d.HTTP, a consumer's messages).
// Call Setup first.
func Run(ctx context.Context, role string, d Deps) error {
	var work func(context.Context) error
	switch role {
	case Front:
		f, err := newFront(d)
		if err != nil {
			return err
		}
		defer f.close()
		mux := http.NewServeMux()
		mux.HandleFunc("POST /", f.accept)
		work = func(ctx context.Context) error {
			return serve(ctx, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, d.HTTP)
		}
	case Store, Ref:
		c := &consumer{d: d, role: role}
		work = c.run
	default:
		return fmt.Errorf("chainfloor: no role %q (want %s, %s or %s)", role, Front, Store, Ref)
	}
	ready := http.NewServeMux()
	ready.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() {
		errc <- serve(ctx, &http.Server{Handler: ready, ReadHeaderTimeout: 10 * time.Second}, d.Ready)
	}()
	go func() { errc <- work(ctx) }()
	err := <-errc
	cancel()
	return errors.Join(err, <-errc)
}

// serve runs srv on ln until ctx ends, then shuts it down gracefully.
func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	if err := stepservice.ServeUntil(ctx, srv, ln, shutdownTimeout, nil); err != nil {
		return fmt.Errorf("chainfloor: serve: %w", err)
	}
	return nil
}
