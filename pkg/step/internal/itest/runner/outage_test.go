package runner_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// squeezed are retry settings whose whole delivery budget passes in a
// fraction of a second, so that an outage can outlast it many times.
func squeezed() step.Options {
	return step.Options{
		MaxDeliveries: 2, BackoffBase: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		ProbeInterval: 20 * time.Millisecond, ProbeMaxInterval: 100 * time.Millisecond,
	}
}

// budget is how long the deliveries of a message last under o when each
// fails at once: its back-offs.
func budget(o step.Options) time.Duration {
	var d time.Duration
	for n := 1; n <= o.MaxDeliveries; n++ {
		d += min(o.BackoffBase<<(n-1), o.BackoffMax)
	}
	return d
}

// awaitUnavailable polls until the runner names exactly want as down.
func (h *harness) awaitUnavailable(want ...string) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for got := h.Runner.Unavailable(); !slices.Equal(got, want); got = h.Runner.Unavailable() {
		if time.Now().After(deadline) {
			h.t.Fatalf("dependencies down: got %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) gauge(family string, match ...string) float64 {
	h.t.Helper()
	return testenv.Gauge(h.t, h.reg, family, match...)
}

// An outage of Postgres, the runner's own dependency, pauses the runner
// for as long as it lasts, many times a message's whole delivery budget,
// and every upload published before and during it completes afterwards.
// One upload's first delivery fails with the outage, its second on its
// own: with that delivery excused it is retried, not dead-lettered.
func TestPostgresOutageIsWaitedFor(t *testing.T) {
	t.Parallel()
	srv := testenv.StartPGServer(t)
	o := squeezed()
	h := newHarnessOn(t, srv.Postgres(), nil, o, func(_ context.Context, ev *events.Event, call int) error {
		if ev.ID == "unlucky" && call == 1 {
			return errors.New("its own failure") // on its second delivery: the first was the outage's
		}
		return nil
	})
	h.Start()
	for i := range 3 {
		h.publish(fmt.Sprintf("before%d", i), []byte("x"), "")
	}
	h.stored.Await(t, 3, timeout)

	srv.Stop()
	h.publish("unlucky", []byte("u"), "")
	h.awaitUnavailable(step.DependencyPostgres)
	if up := h.gauge("blobref_dependency_up", `dependency="postgres"`); up != 0 {
		t.Errorf("blobref_dependency_up{dependency=postgres} while down: got %v, want 0", up)
	}
	const during = 20
	for i := range during {
		h.publish(fmt.Sprintf("during%02d", i), []byte{byte(i)}, "")
	}
	time.Sleep(8 * budget(o)) // the outage goes on: the test's input, not a wait for the runner
	srv.Start()

	got := h.stored.AwaitIDs(t, during+1, timeout)
	if len(got["unlucky"]) != 1 {
		t.Errorf("unlucky: no blob_stored event")
	}
	h.awaitUnavailable()
	if c := h.callsOf("unlucky"); c != 2 {
		t.Errorf("unlucky: effect ran %d times, want 2 (its own failure, then success)", c)
	}
	if dl := testenv.DeadLetters(t, h.js); len(dl) != 0 {
		t.Errorf("dead letters: got %v, want none", dl)
	}
	if n := testenv.Counter(t, h.reg, "blobref_dependency_outages_total", `dependency="postgres"`); n != 1 {
		t.Errorf("outages of postgres: got %v, want 1", n)
	}
	if n := testenv.Counter(t, h.reg, "blobref_step_excused_deliveries_total"); n < 1 {
		t.Errorf("excused deliveries: got %v, want at least 1", n)
	}
	if up := h.gauge("blobref_dependency_up", `dependency="postgres"`); up != 1 {
		t.Errorf("blobref_dependency_up{dependency=postgres} after: got %v, want 1", up)
	}
	// The excuse was written, for a replica or a restart to find.
	if n := h.pg.Count(t, `SELECT coalesce(sum(excused), 0) FROM excused_deliveries WHERE step = 'blob'`); n < 1 {
		t.Errorf("excused deliveries written: got %d, want at least 1", n)
	}
}

// A dependency of the step's own (a bucket, say) that is down pauses the
// runner until its probe answers; a store that is full answers its probe
// while it refuses the uploads, and those are retried until it has room.
// Neither dead-letters anything, however many deliveries pass.
func TestStepDependencyOutages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		err     error
		probeOK bool // the dependency answers its probe during the outage
	}{
		{"down", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, false},
		{"full", &fs.PathError{Op: "write", Path: "/bucket/uploads/x", Err: syscall.ENOSPC}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The outage begins with the first message's effect: one there
			// at the start is TestStepDependencyDownAtStart's.
			var out, seen atomic.Bool
			out.Store(true)
			o := squeezed()
			probes := map[string]step.Probe{"bucket": func(context.Context) error {
				if out.Load() && seen.Load() && !tc.probeOK {
					return errors.New("connection refused")
				}
				return nil
			}}
			h := newHarnessOn(t, testenv.StartPostgres(t), probes, o, func(context.Context, *events.Event, int) error {
				if out.Load() {
					seen.Store(true)
					return step.Dependency("bucket", fmt.Errorf("blob: %w", tc.err))
				}
				return nil
			})
			h.Start()
			const n = 10
			for i := range n {
				h.publish(fmt.Sprintf("u%02d", i), []byte{byte(i)}, "")
			}
			// Deliveries are spent, excused, well past the budget: the
			// store that is down by as many trials as it takes its probe to
			// fail, the full one by one each back-off.
			want := float64(3 * o.MaxDeliveries)
			if !tc.probeOK {
				want = 1
				h.awaitUnavailable("bucket")
			}
			deadline := time.Now().Add(timeout)
			for testenv.Counter(t, h.reg, "blobref_step_excused_deliveries_total") < want {
				if time.Now().After(deadline) {
					t.Fatalf("excused deliveries: got %v, want %v", testenv.Counter(t, h.reg, "blobref_step_excused_deliveries_total"), want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(8 * budget(o)) // the outage goes on
			out.Store(false)
			h.stored.AwaitIDs(t, n, timeout)
			h.awaitUnavailable()
			if dl := testenv.DeadLetters(t, h.js); len(dl) != 0 {
				t.Errorf("dead letters: got %v, want none", dl)
			}
			if c := testenv.Counter(t, h.reg, "blobref_dependency_outages_total", `dependency="bucket"`); c < 1 {
				t.Errorf("outages of the bucket: got %v, want at least 1", c)
			}
		})
	}
}

// A step's own dependency that is down when the runner starts is down from
// the start: the runner says so before any message needs it, fetches
// nothing while it stays down, and runs what was published meanwhile once
// its probe answers.
func TestStepDependencyDownAtStart(t *testing.T) {
	t.Parallel()
	var out atomic.Bool
	out.Store(true)
	o := squeezed()
	probes := map[string]step.Probe{"bucket": func(context.Context) error {
		if out.Load() {
			return errors.New("the bucket does not exist")
		}
		return nil
	}}
	h := newHarnessOn(t, testenv.StartPostgres(t), probes, o, func(_ context.Context, ev *events.Event, _ int) error {
		if out.Load() {
			t.Errorf("%s: effect ran while the bucket was down", ev.ID)
		}
		return nil
	})
	h.Start()
	h.awaitUnavailable("bucket")
	if up := h.gauge("blobref_dependency_up", `dependency="bucket"`); up != 0 {
		t.Errorf("blobref_dependency_up{dependency=bucket} at start: got %v, want 0", up)
	}
	h.awaitLog("dependency down")
	const n = 5
	for i := range n {
		h.publish(fmt.Sprintf("u%d", i), []byte{byte(i)}, "")
	}
	time.Sleep(8 * budget(o)) // the outage goes on
	out.Store(false)
	h.stored.AwaitIDs(t, n, timeout)
	h.awaitUnavailable()
	for i := range n {
		if c := h.callsOf(fmt.Sprintf("u%d", i)); c != 1 {
			t.Errorf("u%d: effect ran %d times, want 1", i, c)
		}
	}
	if dl := testenv.DeadLetters(t, h.js); len(dl) != 0 {
		t.Errorf("dead letters: got %v, want none", dl)
	}
	if c := testenv.Counter(t, h.reg, "blobref_dependency_outages_total", `dependency="bucket"`); c != 1 {
		t.Errorf("outages of the bucket: got %v, want 1", c)
	}
}

// A step whose dependency answers its probe, and that still times out on
// it, fails on its own: its deliveries count, and it ends dead-lettered.
// A bad event is dead-lettered at once.
func TestFailuresWithDependenciesUpStillDeadLetter(t *testing.T) {
	t.Parallel()
	o := squeezed()
	probes := map[string]step.Probe{"bucket": func(context.Context) error { return nil }}
	h := newHarnessOn(t, testenv.StartPostgres(t), probes, o, func(_ context.Context, ev *events.Event, _ int) error {
		switch ev.ID {
		case "slow":
			return step.Dependency("bucket", fmt.Errorf("blob: %w", context.DeadlineExceeded))
		case "bad":
			return step.Permanent(events.ReasonDigestMismatch, errors.New("sha256 differs"))
		}
		return nil
	})
	h.Start()
	h.publish("slow", []byte("s"), "")
	d, _ := h.AwaitDeadLetter(events.RequestedSubject("slow"))
	if d.Reason != events.ReasonRetriesExhausted || d.Deliveries != uint64(o.MaxDeliveries) {
		t.Errorf("dead letter: got %+v, want retries_exhausted after %d deliveries", d, o.MaxDeliveries)
	}
	if c := testenv.Counter(t, h.reg, "blobref_dependency_outages_total"); c != 0 {
		t.Errorf("outages: got %v, want 0", c)
	}
	h.publish("bad", []byte("b"), "")
	if d, _ := h.AwaitDeadLetter(events.RequestedSubject("bad")); d.Reason != events.ReasonDigestMismatch {
		t.Errorf("bad: got reason %q, want digest_mismatch", d.Reason)
	}
}

// A JetStream that goes away and comes back (a restart) is waited for: the
// uploads published before the restart and after it all complete, none is
// dead-lettered.
func TestJetStreamRestartIsWaitedFor(t *testing.T) {
	t.Parallel()
	o := squeezed()
	h := setup(t, o, nil)
	for i := range 5 {
		h.publish(fmt.Sprintf("a%d", i), []byte("x"), "")
	}
	h.stored.Await(t, 5, timeout)
	h.nats.Shutdown()
	time.Sleep(8 * budget(o)) // the outage goes on
	h.nats.Restart()
	for i := range 5 {
		h.publish(fmt.Sprintf("b%d", i), []byte("y"), "")
	}
	h.stored.AwaitIDs(t, 5, timeout)
	h.awaitUnavailable()
	if dl := testenv.DeadLetters(t, h.js); len(dl) != 0 {
		t.Errorf("dead letters: got %v, want none", dl)
	}
}

// A full UPLOADS stream (its MaxBytes reached: "maximum bytes exceeded" on
// the publish of each step's event) is an outage of JetStream: the runner
// pauses and probes, the deliveries spent meanwhile are excused, and once
// the stream has room every upload goes on, none dead-lettered.
func TestFullStreamIsWaitedFor(t *testing.T) {
	t.Parallel()
	o := squeezed()
	h := newHarness(t, o, nil)
	const n = 5
	for i := range n {
		h.publish(fmt.Sprintf("full%d", i), []byte{byte(i)}, "")
	}
	ctx := t.Context()
	s, err := h.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roomy := info.Config
	small := info.Config
	small.MaxBytes = int64(info.State.Bytes) + 16 // the requests, and no room for one more event
	if _, err := h.js.UpdateStream(ctx, small); err != nil {
		t.Fatalf("shrink %s: %v", events.StreamName, err)
	}
	h.Start()

	want := float64(3 * o.MaxDeliveries)
	deadline := time.Now().Add(timeout)
	for testenv.Counter(t, h.reg, "blobref_step_excused_deliveries_total") < want {
		if time.Now().After(deadline) {
			t.Fatalf("excused deliveries: got %v, want %v", testenv.Counter(t, h.reg, "blobref_step_excused_deliveries_total"), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := testenv.Counter(t, h.reg, "blobref_dependency_outages_total", `dependency="jetstream"`); c < 1 {
		t.Errorf("outages of jetstream while the stream is full: got %v, want at least 1", c)
	}
	if dl := testenv.DeadLetters(t, h.js); len(dl) != 0 {
		t.Fatalf("dead letters while the stream is full: got %v, want none", dl)
	}
	time.Sleep(8 * budget(o)) // the stream stays full
	if _, err := h.js.UpdateStream(ctx, roomy); err != nil {
		t.Fatalf("grow %s: %v", events.StreamName, err)
	}
	h.stored.AwaitIDs(t, n, timeout)
	h.awaitUnavailable()
	if dl := testenv.DeadLetters(t, h.js); len(dl) != 0 {
		t.Errorf("dead letters: got %v, want none", dl)
	}
	if !strings.Contains(h.logs.String(), "maximum bytes exceeded") {
		t.Errorf("log: no line names the full stream (maximum bytes exceeded)")
	}
}
