package claimcheck_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/claimcheck"
)

// pauseHooks stops a Stage at its mid-stage point until release is closed.
type pauseHooks struct {
	paused  chan struct{}
	release chan struct{}
}

func (pauseHooks) Wrote(int) {}
func (pauseHooks) Retried()  {}
func (h pauseHooks) MidStage(ctx context.Context) error {
	close(h.paused)
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomBody(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// A writer that stalled mid-body while another took the object over (its
// lease lapsed) can write no further chunk: its publishes are refused by
// the object's fence, and the object the other staged stays whole.
func TestStagingRefusesAStaleWriterAfterATakeover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		same bool // the takeover stages the same bytes (and resumes)
	}{{"same bytes", true}, {"other bytes", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := setupClaims(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st := &claimcheck.Staging{JS: c.js, Bucket: "uploads-staging", LookUp: true}
			const name = "takeover"
			stale := randomBody(3<<20+5, 1)
			body := stale
			if !tc.same {
				body = randomBody(3<<20+5, 2)
			}

			hooks := pauseHooks{paused: make(chan struct{}), release: make(chan struct{})}
			staleErr := make(chan error, 1)
			go func() {
				_, err := st.Stage(ctx, name, bytes.NewReader(stale), hooks)
				staleErr <- err
			}()
			select {
			case <-hooks.paused:
			case err := <-staleErr:
				t.Fatalf("stale writer ended before its mid-stage point: %v", err)
			case <-ctx.Done():
				t.Fatal("stale writer never reached its mid-stage point")
			}

			// The takeover, with a Staging of its own (another process).
			other := &claimcheck.Staging{JS: c.js, Bucket: "uploads-staging", LookUp: true}
			staged, err := other.Stage(ctx, name, bytes.NewReader(body), nil)
			if !tc.same {
				// The stale writer's chunks are of other bytes: dropped,
				// and the retry stages afresh.
				if !errors.Is(err, claimcheck.ErrStale) {
					t.Fatalf("takeover of other bytes: got %v, want ErrStale", err)
				}
				staged, err = other.Stage(ctx, name, bytes.NewReader(body), nil)
			}
			if err != nil {
				t.Fatalf("takeover: %v", err)
			}
			if want := int64(1 << 20); tc.same && staged.Resumed != want {
				t.Errorf("takeover resumed %d bytes, want the stale writer's %d", staged.Resumed, want)
			}

			close(hooks.release)
			select {
			case err := <-staleErr:
				if !errors.Is(err, claimcheck.ErrTakenOver) {
					t.Fatalf("stale writer after the takeover: got %v, want ErrTakenOver", err)
				}
			case <-ctx.Done():
				t.Fatal("stale writer never ended")
			}

			got, err := c.staging.GetBytes(ctx, name)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("staged object: got %d bytes (%v), want the takeover's %d", len(got), err, len(body))
			}
			info, err := c.staging.GetInfo(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(c.chunkSeqs(t, info)); n != int(info.Chunks) {
				t.Errorf("chunk messages: got %d, want the object's %d", n, info.Chunks)
			}
		})
	}
}
