package uploads

import (
	"io"
	"sync"
	"time"
)

// StagedQuota bounds, per caller, the bytes of large bodies in flight in
// one ingest process: being staged, or staged and recorded but not yet
// seen stored. A request charges its body before staging it (all of it at
// once when the Content-Length announces it, else as the bytes arrive past
// the inline threshold) and is refused with a *QuotaError when the charge
// would take its caller past Limit. A request that does not record a
// staged upload gives its charge back when it ends; one that does holds it
// until ingest sees the upload complete, or for Hold at most (a dead
// letter, a completion ingest did not hear of).
//
// The accounting lives in the process's memory: each ingest replica keeps
// its own, and a restart forgets the holds. The staging bucket's own size
// bound is what holds for everyone together.
type StagedQuota struct {
	// Limit is the most bytes one caller may have in flight; 0 or less is
	// no limit (the charges are still kept).
	Limit int64
	// Hold is the longest a recorded upload's bytes keep counting once its
	// request ended [15m].
	Hold time.Duration

	mu    sync.Mutex
	used  map[string]int64   // by caller
	holds map[string]*charge // by upload id, until completed
}

// defaultHold is Hold when none is set.
const defaultHold = 15 * time.Minute

// charge is one request's share of its caller's quota. A nil charge (no
// quota) charges nothing.
type charge struct {
	q      *StagedQuota
	caller string
	n      int64       // bytes charged, under q.mu
	timer  *time.Timer // set while held
}

// open starts the charge of a request of caller whose body has size bytes
// (-1: unknown). A body known to be larger than inline is charged whole at
// once.
func (q *StagedQuota) open(caller string, size int64, inline int) (*charge, error) {
	if q == nil {
		return nil, nil
	}
	c := &charge{q: q, caller: caller}
	if size > int64(inline) {
		if err := c.take(size); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// take adds n bytes to the charge, unless the caller would go past the
// limit.
func (c *charge) take(n int64) error {
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.Limit > 0 && q.used[c.caller]+n > q.Limit {
		return &QuotaError{Limit: q.Limit}
	}
	if q.used == nil {
		q.used = map[string]int64{}
	}
	q.used[c.caller] += n
	c.n += n
	return nil
}

// reader returns body, charged as it is read when its size is not known:
// once more than inline bytes have been read, every byte counts.
func (c *charge) reader(body io.Reader, size int64, inline int) io.Reader {
	if c == nil || size >= 0 {
		return body
	}
	return &chargingReader{r: body, c: c, inline: int64(inline)}
}

// release gives the charge back.
func (c *charge) release() {
	if c == nil {
		return
	}
	c.q.mu.Lock()
	defer c.q.mu.Unlock()
	c.releaseLocked()
}

func (c *charge) releaseLocked() {
	q := c.q
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if c.n == 0 {
		return
	}
	if q.used[c.caller] -= c.n; q.used[c.caller] <= 0 {
		delete(q.used, c.caller)
	}
	c.n = 0
}

// hold keeps the charge of upload id, whose request ended, until stored is
// called for id or Hold has passed.
func (c *charge) hold(id string) {
	if c == nil {
		return
	}
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if c.n == 0 {
		return
	}
	if old := q.holds[id]; old != nil {
		old.releaseLocked()
	}
	if q.holds == nil {
		q.holds = map[string]*charge{}
	}
	q.holds[id] = c
	d := q.Hold
	if d <= 0 {
		d = defaultHold
	}
	c.timer = time.AfterFunc(d, func() { q.unhold(id, c) })
}

// stored releases the charge held for upload id, if any: it completed.
func (q *StagedQuota) stored(id string) {
	if q == nil {
		return
	}
	q.mu.Lock()
	c := q.holds[id]
	q.mu.Unlock()
	if c != nil {
		q.unhold(id, c)
	}
}

// unhold releases c if it is still what is held for id.
func (q *StagedQuota) unhold(id string, c *charge) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.holds[id] != c {
		return
	}
	delete(q.holds, id)
	c.releaseLocked()
}

// close releases every hold (the service stops).
func (q *StagedQuota) close() {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, c := range q.holds {
		c.releaseLocked()
		delete(q.holds, id)
	}
}

// InFlight returns the bytes caller has in flight.
func (q *StagedQuota) InFlight(caller string) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.used[caller]
}

// chargingReader charges the bytes of a body of unknown size as they are
// read, from the first byte past the inline threshold on.
type chargingReader struct {
	r           io.Reader
	c           *charge
	inline      int64
	read, taken int64
}

func (r *chargingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.read += int64(n)
	if r.read > r.inline && r.read > r.taken {
		if qerr := r.c.take(r.read - r.taken); qerr != nil {
			return n, qerr
		}
		r.taken = r.read
	}
	return n, err
}
