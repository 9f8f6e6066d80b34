//go:build blobref_failpoints

package failpoint

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestParseRejectsBadSpecs(t *testing.T) {
	for _, spec := range []string{"x", "=crash", "a=explode", "a=delay(xyz)", "a=0*crash", "a=101%error", "a=delay(-1s)"} {
		if err := Check(spec); err == nil {
			t.Errorf("Check(%q): got nil error, want one", spec)
		}
	}
	m, err := parse(" a/b=crash ; c=2*error;d=50%delay(10ms);")
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if len(m) != 3 {
		t.Fatalf("got %d points, want 3", len(m))
	}
}

func TestInject(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(func() { _ = Enable("") })
	crashed := 0
	crash = func() { crashed++ }

	if err := Inject(ctx, "p"); err != nil {
		t.Fatalf("disarmed: got %v, want nil", err)
	}
	if err := Enable("p=2*error;c=crash;d=delay(30ms);never=0%error"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := Inject(ctx, "p")
		if want := i < 2; errors.Is(err, ErrInjected) != want {
			t.Errorf("hit %d: got %v, want injected=%v", i, err, want)
		}
	}
	_ = Inject(ctx, "c")
	if crashed != 1 {
		t.Errorf("crash: got %d crashes, want 1", crashed)
	}
	start := time.Now()
	if err := Inject(ctx, "d"); err != nil || time.Since(start) < 30*time.Millisecond {
		t.Errorf("delay: got %v after %v, want nil after 30ms", err, time.Since(start))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Inject(cctx, "d"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled delay: got %v, want context.Canceled", err)
	}
	if err := Inject(ctx, "never"); err != nil {
		t.Errorf("0%%: got %v, want nil", err)
	}
	if err := Enable(""); err != nil {
		t.Fatal(err)
	}
	if err := Inject(ctx, "p"); err != nil {
		t.Errorf("after disarm: got %v, want nil", err)
	}
}

func BenchmarkInjectDisarmed(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		_ = Inject(ctx, "blob/after-effect")
	}
}
