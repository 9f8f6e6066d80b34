package runner_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// publishAt sends a request event for id whose event time is at.
func (h *harness) publishAt(id string, at time.Time) {
	h.t.Helper()
	ev, err := events.NewRequested(events.Request{
		ID: id, Source: "/test", Subject: "users/" + id + "/avatar", ContentType: "image/png", Data: []byte(id), Time: at,
	})
	if err != nil {
		h.t.Fatalf("NewRequested: %v", err)
	}
	h.Publish(ev, "")
}

// An event older than the retention horizon (the stream's max age, read
// from JetStream, plus the margin) is refused as expired before its marker
// is looked up: its side effect does not run, nothing is emitted, even
// when its marker is still there; a younger one runs.
func TestEventsPastTheHorizonAreRefusedAsExpired(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{}, nil)
	ctx := context.Background()
	s, err := h.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	horizon := step.Horizon(s.CachedInfo().Config.MaxAge)
	if want := events.DefaultMaxAge + step.RetentionMargin; horizon != want {
		t.Fatalf("horizon: got %v, want %v", horizon, want)
	}
	now := time.Now()

	// A marker recorded for "remembered", as if it ran long ago.
	if _, err := h.pg.Pool.Exec(ctx, `INSERT INTO step_markers (upload_id, step, fingerprint, result, created_at)
		VALUES ('remembered', 'blob', 'x', '{}', now() - interval '30 days')`); err != nil {
		t.Fatal(err)
	}
	h.publishAt("young", now.Add(-horizon+time.Hour))
	h.publishAt("old", now.Add(-horizon-time.Hour))
	h.publishAt("remembered", now.Add(-horizon-time.Hour))

	if got := h.stored.AwaitIDs(t, 1, timeout); len(got["young"]) != 1 {
		t.Errorf("young: got events %v, want its blob_stored", got)
	}
	for _, id := range []string{"old", "remembered"} {
		d, _ := h.AwaitDeadLetter(events.RequestedSubject(id))
		if d.Reason != events.ReasonExpired || d.Step != "blob" {
			t.Errorf("%s: dead letter %+v, want reason expired from step blob", id, d)
		}
		h.AwaitOutcome(id, step.Dead)
		if c := h.callsOf(id); c != 0 {
			t.Errorf("%s: effect ran %d times, want 0", id, c)
		}
		// Settled: anything it emitted is in the stream by now.
		if _, err := s.GetLastMsgForSubject(ctx, events.BlobStoredSubject(id)); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("%s: blob_stored in the stream (err %v), want none", id, err)
		}
	}
	if n := h.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'old'`); n != 0 {
		t.Errorf("old: %d markers, want 0", n)
	}
}
