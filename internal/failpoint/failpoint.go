// Package failpoint lets tests crash, fail or slow a running service at named
// points between its side effects.
//
// Failpoints are off unless Enable is called with a non-empty specification,
// which the services read from the BLOBREF_FAILPOINTS environment variable.
// When off, Inject costs one atomic load.
//
// A specification is a semicolon-separated list of name=action pairs:
//
//	blob/after-effect=crash;ref/before-ack=error;blob/before-effect=delay(200ms)
//
// Actions:
//
//	crash          the process kills itself with SIGKILL, as a crash would
//	error          Inject returns an error (a transient failure of the step)
//	delay(D)       Inject sleeps for the Go duration D (or until ctx is done)
//	N*ACTION       the action fires on the first N hits only, then the point is off
//	P%ACTION       the action fires on each hit with probability P (0-100)
package failpoint

import (
	"context"
	"errors"
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

// ErrInjected is the error returned by a failpoint whose action is "error".
var ErrInjected = errors.New("failpoint: injected error")

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

// Enable parses spec and arms the failpoints it names, replacing any armed
// before. An empty spec disarms every failpoint.
func Enable(spec string) error {
	parsed, err := Parse(spec)
	if err != nil {
		return err
	}
	mu.Lock()
	points = parsed
	mu.Unlock()
	enabled.Store(len(parsed) > 0)
	return nil
}

// Parse checks a specification without arming it.
func Parse(spec string) (map[string]*action, error) {
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
	if a.percent > 0 && rand.IntN(100) >= a.percent {
		return nil
	}
	if a.left > 0 {
		a.left--
	}
	c := *a
	return &c
}
