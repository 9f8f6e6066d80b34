package uploads_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// The operation runs against real JetStream and Postgres in the api
// package's tests, through the HTTP handler.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIDDependsOnCallerAndKey(t *testing.T) {
	t.Parallel()
	a := uploads.ID("alice", "k")
	if len(a) != 32 || !events.ValidID(a) {
		t.Errorf("ID: got %q, want 32 token-safe characters", a)
	}
	if a != uploads.ID("alice", "k") {
		t.Error("ID: not stable")
	}
	// The known answer: sha256("alice\nk"), first 32 hex characters.
	if want := "d322752ace2fac3f98e01a2d042e57a9"; a != want {
		t.Errorf("ID: got %s, want %s", a, want)
	}
	for _, other := range []string{uploads.ID("bob", "k"), uploads.ID("alice", "k2"), uploads.ID("alice", "K")} {
		if other == a {
			t.Errorf("ID: %s shared by different callers or keys", a)
		}
	}
}
