package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/bench/internal/benchtest"
	"github.com/blobref/blobref/pkg/events"
)

// TestSettle runs nats-server and ingest, publishes blob_stored events
// straight to UPLOADS, and checks that Settle returns only once ingest's
// read model has folded in every one of them: its projector holds a
// blob_stored event back for a quarter of a second, waiting for its
// completed event, so an early return finds rows missing. A pipeline
// without ingest settles at once.
func TestSettle(t *testing.T) {
	ctx, bins, dir := buildTest(t, NATSServer, Ingest)
	p := startTest(ctx, t, bins, filepath.Join(dir, "run"), Ingest)
	_, js := benchtest.Connect(t, p.NATSURL)
	const n = 50
	for i := range n {
		req, err := events.NewRequested(events.Request{ID: fmt.Sprintf("settle-%02d", i), Source: "/bench/settle",
			Subject: "s/settle", ContentType: "text/plain", Data: []byte("bytes")})
		if err != nil {
			t.Fatal(err)
		}
		stored, err := events.NewBlobStored(req, events.Blob{Key: "uploads/" + req.ID, Size: 5, SHA256: req.SHA256, ContentType: "text/plain"},
			events.SourceBlobWriter)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := stored.Msg(req.ID + "-stored")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Settle(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, p.ClientURL("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM ingest_upload_view WHERE id LIKE 'settle-%' AND stored_at IS NOT NULL`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != n {
		t.Errorf("after Settle: %d of %d uploads stored in the read model", rows, n)
	}

	bare := startTest(ctx, t, bins, filepath.Join(dir, "bare"))
	if err := bare.Settle(ctx, time.Millisecond); err != nil {
		t.Errorf("without ingest: %v", err)
	}
	// A JetStream without the read model's consumers (an ingest built
	// before it made none): nothing to wait for.
	_, bjs := benchtest.Connect(t, bare.NATSURL)
	if _, err := bjs.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamName, Subjects: []string{"uploads.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := settle(ctx, bjs, time.Second); err != nil {
		t.Errorf("without the read model's consumers: %v", err)
	}
}
