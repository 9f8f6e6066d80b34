package api

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// CallerLimits bound what one caller (one token's caller name) may ask of
// one ingest process, so that no caller can starve the others. Past them a
// request is answered 429 with Retry-After. A zero field is no limit.
type CallerLimits struct {
	// MaxConcurrent is the most uploads (POST /v1/uploads, a Prefer: wait
	// included) a caller may have in progress at once.
	MaxConcurrent int
	// Rate is the requests per second a caller may send on average, every
	// route together; Burst is how many it may send at once above it.
	Rate  float64
	Burst int
}

// LimitError is a request over its caller's limits (429).
type LimitError struct {
	// What was exceeded, for the problem's detail.
	What string
	// RetryAfter is when a request may succeed again.
	RetryAfter time.Duration
}

func (e *LimitError) Error() string { return "over the caller's limit: " + e.What }

// limiter keeps each caller's limits. Callers come from the configured
// tokens, so the map is as small as the token list.
type limiter struct {
	limits CallerLimits
	mu     sync.Mutex
	by     map[string]*callerLimits
}

type callerLimits struct {
	rate    *rate.Limiter // nil: no rate limit
	uploads int           // in progress
}

func newLimiter(l CallerLimits) *limiter {
	return &limiter{limits: l, by: map[string]*callerLimits{}}
}

func (l *limiter) of(caller string) *callerLimits {
	c := l.by[caller]
	if c == nil {
		c = &callerLimits{}
		if l.limits.Rate > 0 {
			c.rate = rate.NewLimiter(rate.Limit(l.limits.Rate), max(l.limits.Burst, 1))
		}
		l.by[caller] = c
	}
	return c
}

// allow counts one request of caller against its rate: a *LimitError when
// it is over it.
func (l *limiter) allow(caller string) error {
	if l.limits.Rate <= 0 {
		return nil
	}
	l.mu.Lock()
	lim := l.of(caller).rate
	l.mu.Unlock()
	now := time.Now()
	r := lim.ReserveN(now, 1)
	delay := r.DelayFrom(now)
	if delay == 0 {
		return nil
	}
	r.CancelAt(now) // a refused request costs nothing
	return &LimitError{
		What:       fmt.Sprintf("more than %s requests per second (bursts of %d)", formatRate(l.limits.Rate), max(l.limits.Burst, 1)),
		RetryAfter: delay,
	}
}

// startUpload counts an upload of caller in progress until done is called:
// a *LimitError when it has MaxConcurrent already.
func (l *limiter) startUpload(caller string) (done func(), err error) {
	if l.limits.MaxConcurrent <= 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.of(caller)
	if c.uploads >= l.limits.MaxConcurrent {
		return nil, &LimitError{
			What:       fmt.Sprintf("more than %d uploads in progress at once", l.limits.MaxConcurrent),
			RetryAfter: time.Second,
		}
	}
	c.uploads++
	return func() {
		l.mu.Lock()
		c.uploads--
		l.mu.Unlock()
	}, nil
}

// formatRate writes a rate without needless decimals.
func formatRate(r float64) string {
	if r == math.Trunc(r) {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%g", r)
}

// retryAfterSeconds is d as a Retry-After: whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
