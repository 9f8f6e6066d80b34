package events_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
)

func TestStreamConfigDefaults(t *testing.T) {
	t.Parallel()
	c := events.StreamConfig(events.StreamOptions{})
	if c.Name != "UPLOADS" || len(c.Subjects) != 1 || c.Subjects[0] != "uploads.>" {
		t.Errorf("UPLOADS: got name %q subjects %q", c.Name, c.Subjects)
	}
	if c.Replicas != 1 || c.Storage != jetstream.FileStorage || c.MaxAge != 7*24*time.Hour || c.Duplicates != 2*time.Minute {
		t.Errorf("UPLOADS defaults: got replicas %d storage %v max age %v duplicates %v", c.Replicas, c.Storage, c.MaxAge, c.Duplicates)
	}
	if c.Retention != jetstream.LimitsPolicy {
		t.Errorf("UPLOADS retention: got %v, want limits", c.Retention)
	}
	d := events.DLQStreamConfig(events.StreamOptions{Replicas: 3, Storage: jetstream.MemoryStorage, DLQMaxAge: time.Hour, Duplicates: time.Minute})
	if d.Name != "UPLOADS_DLQ" || len(d.Subjects) != 1 || d.Subjects[0] != "dlq.uploads.>" {
		t.Errorf("UPLOADS_DLQ: got name %q subjects %q", d.Name, d.Subjects)
	}
	if d.Replicas != 3 || d.Storage != jetstream.MemoryStorage || d.MaxAge != time.Hour || d.Duplicates != time.Minute {
		t.Errorf("UPLOADS_DLQ options: got replicas %d storage %v max age %v duplicates %v", d.Replicas, d.Storage, d.MaxAge, d.Duplicates)
	}
	if got := events.DLQStreamConfig(events.StreamOptions{}).MaxAge; got != 30*24*time.Hour {
		t.Errorf("UPLOADS_DLQ default max age: got %v, want 30 days", got)
	}

	// Bounded in bytes; full streams refuse new messages rather than drop old ones.
	dd := events.DLQStreamConfig(events.StreamOptions{})
	if c.MaxBytes != 1<<30 || dd.MaxBytes != 256<<20 || c.Discard != jetstream.DiscardNew || dd.Discard != jetstream.DiscardNew {
		t.Errorf("byte limits: UPLOADS %d %v, UPLOADS_DLQ %d %v; want 1 GiB and 256 MiB, both discard new", c.MaxBytes, c.Discard, dd.MaxBytes, dd.Discard)
	}
	if want := int32(events.DefaultMaxInlineSize + events.HeaderRoom); c.MaxMsgSize != want {
		t.Errorf("UPLOADS max message size: got %d, want %d", c.MaxMsgSize, want)
	}
	o := events.StreamOptions{MaxBytes: 1 << 20, DLQMaxBytes: -5, MaxInlineSize: 4096}
	if c, d := events.StreamConfig(o), events.DLQStreamConfig(o); c.MaxBytes != 1<<20 || d.MaxBytes != -1 || c.MaxMsgSize != 4096+events.HeaderRoom {
		t.Errorf("options: UPLOADS max bytes %d, max message %d, UPLOADS_DLQ max bytes %d; want 1 MiB, %d, unlimited",
			c.MaxBytes, c.MaxMsgSize, d.MaxBytes, 4096+events.HeaderRoom)
	}
}

// The largest event the contract allows fits UPLOADS' message size; a larger
// message is refused. A full stream refuses new messages and keeps the old.
func TestStreamLimits(t *testing.T) {
	t.Parallel()
	opts := natstest.DefaultTestOptions
	opts.MaxPayload = 2 << 20 // the server's limit is not the one under test
	_, js := runJetStreamWith(t, opts)
	ctx := testContext(t)

	// Streams made before the byte limits existed are updated to them.
	for _, cfg := range []jetstream.StreamConfig{events.StreamConfig(events.StreamOptions{}), events.DLQStreamConfig(events.StreamOptions{})} {
		cfg.Discard, cfg.MaxBytes, cfg.MaxMsgSize = jetstream.DiscardOld, -1, -1
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	const limit = 4 << 20
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{MaxBytes: limit, DLQMaxBytes: limit}); err != nil {
		t.Fatalf("EnsureStreams over streams without limits: %v", err)
	}

	long := func(n int) string { return strings.Repeat("\u00e9", n/2) } // percent-encodes to 3 bytes per byte
	req, err := events.NewRequested(events.Request{
		ID: strings.Repeat("x", 128), Source: "/" + long(4094), Owner: long(events.MaxOwnerLen),
		Subject: long(events.MaxSubjectLen), ContentType: `text/plain; x="` + strings.Repeat(" ", events.MaxContentTypeLen-17) + `x"`,
		Time: testTime, Data: make([]byte, events.DefaultMaxInlineSize),
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := req.Msg(strings.Repeat("m", 128))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("the largest event the contract allows: %v", err)
	}
	m.Data = append(m.Data, make([]byte, events.HeaderRoom)...)
	m.Header.Set(events.HeaderMsgID, "bigger")
	if _, err := js.PublishMsg(ctx, m); err == nil {
		t.Errorf("a message over the inline limit plus the header room was stored")
	}

	// Fill UPLOADS: the publish that does not fit is refused, the first message stays.
	first, err := js.Publish(ctx, "uploads.requested.first", make([]byte, 1000))
	if err != nil {
		t.Fatal(err)
	}
	refused := false
	for i := range 8 {
		if _, err := js.Publish(ctx, "uploads.requested.fill", make([]byte, 1<<20)); err != nil {
			refused = true
			break
		} else if i == 7 {
			t.Fatalf("8 MiB stored in a stream of %d bytes", limit)
		}
	}
	if !refused {
		t.Fatal("no publish refused")
	}
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMsg(ctx, first.Sequence); err != nil {
		t.Errorf("the first message after the stream filled: %v, want it kept", err)
	}
}

func TestEnsureStreams(t *testing.T) {
	t.Parallel()
	_, js := runJetStream(t)
	ctx := testContext(t)

	// Concurrently, as many replicas starting at once do.
	const replicas = 8
	var wg sync.WaitGroup
	errs := make(chan error, replicas)
	for range replicas {
		wg.Go(func() { errs <- events.EnsureStreams(ctx, js, events.StreamOptions{}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent EnsureStreams: %v", err)
		}
	}
	// Again, sequentially, and with changed options (an update).
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatalf("second EnsureStreams: %v", err)
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{MaxAge: 24 * time.Hour}); err != nil {
		t.Fatalf("EnsureStreams with new max age: %v", err)
	}
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 24*time.Hour {
		t.Errorf("UPLOADS max age after update: got %v, want 24h", got)
	}

	for subject, stream := range map[string]string{
		"uploads.requested.x":                           events.StreamName,
		"uploads.blob.stored.x":                         events.StreamName,
		"uploads.completed.x":                           events.StreamName,
		"dlq.uploads.requested.x":                       events.DLQStreamName,
		events.DeadLetterSubject("uploads.completed.y"): events.DLQStreamName,
	} {
		ack, err := js.Publish(ctx, subject, []byte("x"))
		if err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
		if ack.Stream != stream {
			t.Errorf("publish %s: landed in %q, want %q", subject, ack.Stream, stream)
		}
	}

	// De-duplication by Nats-Msg-Id within the window.
	for i, wantDup := range []bool{false, true} {
		ack, err := js.Publish(ctx, "uploads.requested.dup", []byte("x"), jetstream.WithMsgID("dup"))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != wantDup {
			t.Errorf("publish %d: duplicate %v, want %v", i, ack.Duplicate, wantDup)
		}
	}
}

func TestEnsureStreamsRejectsOverlap(t *testing.T) {
	t.Parallel()
	_, js := runJetStream(t)
	ctx := testContext(t)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	// A stream that overlaps UPLOADS is refused, so the subjects really are owned.
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"uploads.requested.>"}})
	if err == nil {
		t.Fatalf("overlapping stream created")
	}
}

func TestPublishAndDecodeThroughJetStream(t *testing.T) {
	t.Parallel()
	_, js := runJetStream(t)
	ctx := testContext(t)
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	req, stored, completed := chain(t)
	req.Subject = `users/42 "ünïcødé" 100%`
	stored.Subject, completed.Subject = req.Subject, req.Subject
	completed.Ref.Subject = req.Subject
	var err error
	if completed, err = events.NewCompleted(stored, *completed.Ref, "/blobref/refwriter"); err != nil {
		t.Fatal(err)
	}

	for i, e := range []*events.Event{req, claimChecked(t), stored, completed} {
		m, err := e.Msg(events.DerivedMsgID("test", events.StreamName, uint64(i)))
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("publish %s: %v", e.Type, err)
		}
		raw, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		got, err := raw.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := events.Decode(got.Subject, got.Header, got.Data)
		if err != nil {
			t.Fatalf("Decode %s: %v", e.Type, err)
		}
		if d := equalEvents(dec, e); d != "" {
			t.Errorf("%s: %s", e.Type, d)
		}
	}

	// A durable pipeline consumer sees only its kind.
	c, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable:       events.BlobWriterConsumer.Durable,
		FilterSubject: events.BlobWriterConsumer.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for msg := range batch.Messages() {
		n++
		e, err := events.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if e.Type != events.TypeRequested {
			t.Errorf("blobwriter consumer got %s", e.Type)
		}
		if err := msg.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("blobwriter consumer got %d messages, want 2", n)
	}
}
