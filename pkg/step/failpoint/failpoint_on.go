//go:build blobref_failpoints

package failpoint

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type kind int

const (
	kindCrash kind = iota
	kindError
	kindDelay
)

type action struct {
	kind    kind
	delay   time.Duration
	percent int   // 0 means always
	left    int64 // remaining hits; negative means unlimited
}

var (
	enabled atomic.Bool
	mu      sync.Mutex
	points  map[string]*action
	// crash is replaced in tests of this package.
	crash = func() {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught; wait for it to land
	}
)

// Compiled reports whether this binary has failpoints: it was built with
// the build tag blobref_failpoints.
const Compiled = true

// Enable parses spec and arms the failpoints it names, replacing any armed
// before. An empty spec disarms every failpoint.
func Enable(spec string) error {
	parsed, err := parse(spec)
	if err != nil {
		return err
	}
	mu.Lock()
	points = parsed
	mu.Unlock()
	enabled.Store(len(parsed) > 0)
	return nil
}

// Check checks a specification without arming it.
func Check(spec string) error {
	_, err := parse(spec)
	return err
}

func parse(spec string) (map[string]*action, error) {
	out := map[string]*action{}
	for _, item := range strings.Split(spec, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, act, ok := strings.Cut(item, "=")
		name, act = strings.TrimSpace(name), strings.TrimSpace(act)
		if !ok || name == "" {
			return nil, fmt.Errorf("failpoint: %q: want name=action", item)
		}
		a, err := parseAction(act)
		if err != nil {
			return nil, fmt.Errorf("failpoint: %s: %w", name, err)
		}
		out[name] = a
	}
	return out, nil
}

func parseAction(s string) (*action, error) {
	a := &action{left: -1}
	if n, rest, ok := strings.Cut(s, "*"); ok {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("bad count %q", n)
		}
		a.left, s = v, rest
	}
	if p, rest, ok := strings.Cut(s, "%"); ok {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || v > 100 {
			return nil, fmt.Errorf("bad percentage %q", p)
		}
		a.percent, s = v, rest
		if v == 0 {
			a.left = 0
		}
	}
	switch {
	case s == "crash":
		a.kind = kindCrash
	case s == "error":
		a.kind = kindError
	case strings.HasPrefix(s, "delay(") && strings.HasSuffix(s, ")"):
		d, err := time.ParseDuration(s[len("delay(") : len(s)-1])
		if err != nil || d < 0 {
			return nil, fmt.Errorf("bad delay %q", s)
		}
		a.kind, a.delay = kindDelay, d
	default:
		return nil, fmt.Errorf("unknown action %q (want crash, error or delay(D))", s)
	}
	return a, nil
}

// Inject runs the action armed at name, if any. It returns ErrInjected for
// an "error" action, ctx.Err() when a delay is cut short, and nil otherwise.
func Inject(ctx context.Context, name string) error {
	if !enabled.Load() {
		return nil
	}
	a := take(name)
	if a == nil {
		return nil
	}
	switch a.kind {
	case kindCrash:
		crash()
	case kindError:
		return fmt.Errorf("%w at %s", ErrInjected, name)
	case kindDelay:
		t := time.NewTimer(a.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// take returns a copy of the armed action if it fires on this hit.
func take(name string) *action {
	mu.Lock()
	defer mu.Unlock()
	a := points[name]
	if a == nil || a.left == 0 {
		return nil
	}
	if a.percent > 0 && rand.IntN(100) >= a.percent { // #nosec G404 -- picks which calls a test's failpoint fires on, no secret
		return nil
	}
	if a.left > 0 {
		a.left--
	}
	c := *a
	return &c
}
