package runner_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// With LookUpConsumer the runner creates and changes no consumer: it waits
// while its durable consumer is missing, and while it exists with other
// settings than DurableConfig's, and consumes once blobrefctl setup (here,
// the test) created it as DurableConfig describes.
func TestLookUpConsumerWaitsForSetup(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	nc, js := n.Connect()
	pg := testenv.StartPostgres(t)
	stored := testenv.Subscribe(t, nc, "uploads.blob.stored.>")
	logs := &testenv.SyncBuffer{}
	opts := step.Options{
		AckWait: 5 * time.Second, FetchWait: 200 * time.Millisecond, LookUpConsumer: true,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	r, err := step.NewRunner(js, pg.Pool, step.Step[events.Blob]{
		Name:     "blob",
		Consumes: events.TypeRequested,
		Durable:  events.BlobWriterConsumer.Durable,
		Effect: func(_ context.Context, ev *events.Event) (events.Blob, error) {
			return events.Blob{Key: "uploads/" + ev.ID, Size: int64(len(ev.Data)), SHA256: ev.SHA256, ContentType: ev.ContentType}, nil
		},
		Emit: func(ev *events.Event, b events.Blob) (*events.Event, error) {
			return events.NewBlobStored(ev, b, "/test")
		},
	}, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := step.DurableConfig(events.BlobWriterConsumer, opts)
	if got := r.ConsumerConfig(); got.AckWait != 5*time.Second || got.Durable != want.Durable || got.MaxAckPending != want.MaxAckPending {
		t.Fatalf("ConsumerConfig: got %+v, want DurableConfig's %+v", got, want)
	}
	testenv.Run(t, r)
	ctx := t.Context()

	awaitLog(t, logs, "problem=\"not found\"")
	if _, err := js.Consumer(ctx, events.StreamName, want.Durable); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer while the runner waits: got %v, want ErrConsumerNotFound (the runner must not create it)", err)
	}

	other := want
	other.AckWait = 30 * time.Second
	if _, err := js.CreateConsumer(ctx, events.StreamName, other); err != nil {
		t.Fatal(err)
	}
	awaitLog(t, logs, "it has filter uploads.requested.>, ack AckExplicit, ack wait 30s")
	if c, err := js.Consumer(ctx, events.StreamName, want.Durable); err != nil || c.CachedInfo().Config.AckWait != 30*time.Second {
		t.Fatalf("consumer with other settings: got %v, want it left as it was (ack wait 30s)", err)
	}

	if _, err := js.UpdateConsumer(ctx, events.StreamName, want); err != nil {
		t.Fatal(err)
	}
	ev, err := events.NewRequested(events.Request{ID: testenv.ID("lookup"), Source: "/test", Subject: "users/1/a",
		ContentType: "text/plain", Data: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, js, ev, ev.ID)
	if got := stored.Await(t, 1, timeout); len(got[ev.ID]) != 1 {
		t.Fatalf("blob_stored events: got %v, want one of %s", got, ev.ID)
	}
}

// awaitLog waits until the runner has logged text.
func awaitLog(t *testing.T, logs *testenv.SyncBuffer, text string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(logs.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("the runner did not log %q:\n%s", text, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
