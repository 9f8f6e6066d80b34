package testenv

import (
	"context"
	"log/slog"
	"testing"
)

// Logger returns a debug-level text logger that writes to the test's
// output, so a failing test shows what the code under test logged.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Runner is a component that works until its context is done, such as a
// step.Runner.
type Runner interface {
	Run(ctx context.Context) error
}

// Run runs r in a goroutine until the test's cleanup, which cancels r's
// context and waits for Run to return. An error from Run fails the test.
func Run(t testing.TB, r Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })
}
