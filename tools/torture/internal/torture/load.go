package torture

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/torture/internal/checker"
)

// The token the ingest processes accept (as strong as ingest wants), and
// the caller it stands for.
const (
	token  = "tortureZq3vX9pL2mN8rT4wY6bC1dF5gH7" // #nosec G101 -- the run's own token for the ingest processes it starts on loopback
	caller = "dev"
)

// giveUpAfter bounds how long one client keeps retrying one upload; a
// request not accepted by then fails the run (the pipeline was down for
// longer than any chaos step lasts).
const giveUpAfter = 3 * time.Minute

// load produces the run's uploads and keeps the books of what was accepted.
type load struct {
	seed     int64
	subjects []string
	ingest   []string
	js       jetstream.JetStream
	db       *pgxpool.Pool
	log      func(string, ...any)
	limiter  <-chan time.Time

	next atomic.Int64 // index of the next upload

	mu          sync.Mutex
	accepted    []checker.Upload
	direct      map[string]*events.Event // direct uploads by id
	poisoned    map[string]bool          // ids a conflict poison event was sent for
	poison      []checker.Poison
	republishes int
	httpRetries int
	errs        []string
}

func (l *load) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log("LOAD ERROR %s", msg)
	l.mu.Lock()
	l.errs = append(l.errs, msg)
	l.mu.Unlock()
}

func (l *load) accept(u checker.Upload) {
	l.mu.Lock()
	l.accepted = append(l.accepted, u)
	l.mu.Unlock()
}

func (l *load) acceptedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

// payload returns deterministic bytes of upload i: mostly small, one in ten
// over ingest's INLINE_THRESHOLD of 16KiB so it is claim-checked.
func payload(rng *rand.Rand, tag string) []byte {
	size := 64 + rng.IntN(4096)
	if rng.IntN(10) == 0 {
		size = 20<<10 + rng.IntN(40<<10)
	}
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.UintN(256)) // #nosec G115 -- below 256
	}
	copy(b, tag)
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// httpWorker uploads over HTTP until stop is closed, each upload retried
// with its Idempotency-Key until ingest accepts it.
func (l *load) httpWorker(ctx context.Context, w int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(l.seed), uint64(1000+w))) // #nosec G115 G404 -- a load reproducible from the run's seed, no secret
	client := &http.Client{Timeout: 20 * time.Second}
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-l.limiter:
		}
		i := l.next.Add(1)
		key := fmt.Sprintf("torture-%d-%d", l.seed, i)
		subject := l.subjects[rng.IntN(len(l.subjects))]
		data := payload(rng, key)
		h := sha256.Sum256([]byte(caller + "\n" + key))
		id := hex.EncodeToString(h[:])[:32]
		start := time.Now()
		for attempt := 0; ; attempt++ {
			if ctx.Err() != nil {
				return
			}
			if time.Since(start) > giveUpAfter {
				l.fail("http upload %s (key %s) not accepted after %v", id, key, giveUpAfter)
				break
			}
			addr := l.ingest[rng.IntN(len(l.ingest))]
			status, body, err := postUpload(ctx, client, addr, subject, key, data)
			if err == nil && status >= 200 && status < 300 {
				var got struct{ ID string }
				if jerr := json.Unmarshal(body, &got); jerr != nil || got.ID != id {
					l.fail("http upload %s: answer %d %s, want id %s", key, status, body, id)
					break
				}
				l.accept(checker.Upload{ID: id, Subject: subject, SHA256: sum(data), Size: int64(len(data)), Via: "http"})
				break
			}
			if err == nil && status != http.StatusServiceUnavailable && status != http.StatusConflict && status < 500 {
				// 4xx other than 409 answers a correct retry wrongly: a finding.
				l.fail("http upload %s (key %s): status %d: %s", id, key, status, body)
				break
			}
			l.mu.Lock()
			l.httpRetries++
			l.mu.Unlock()
			time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		}
	}
}

func postUpload(ctx context.Context, c *http.Client, addr, subject, key string, data []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/uploads?subject="+subject, bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// publish publishes msg until JetStream acknowledges it, keeping its
// Nats-Msg-Id so a retry of a stored but unacknowledged publish is
// de-duplicated.
func (l *load) publish(ctx context.Context, msg *nats.Msg) error {
	start := time.Now()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := l.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) > giveUpAfter {
			return fmt.Errorf("publish %s not acknowledged after %v: %w", msg.Subject, giveUpAfter, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// directWorker publishes request events straight to JetStream, with event
// times up to 3s in the past so the current reference of a subject sees
// them out of order. Every tenth turn it republishes a random earlier
// request (a new Nats-Msg-Id), and every fiftieth it sends a poison event.
func (l *load) directWorker(ctx context.Context, w int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(l.seed), uint64(2000+w))) // #nosec G115 G404 -- a load reproducible from the run's seed, no secret
	for turn := 0; ; turn++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-l.limiter:
		}
		switch {
		case turn%10 == 9:
			l.republish(ctx, rng)
			continue
		case turn%50 == 25:
			l.sendPoison(ctx, rng, fmt.Sprintf("%d-%d", w, turn))
			continue
		}
		i := l.next.Add(1)
		id := fmt.Sprintf("d%d-%d", l.seed, i)
		subject := l.subjects[rng.IntN(len(l.subjects))]
		data := payload(rng, id)
		if len(data) > 16<<10 {
			data = data[:16<<10]
		}
		t := time.Now().UTC().Add(-time.Duration(rng.IntN(3000)) * time.Millisecond).Truncate(time.Microsecond)
		ev, err := events.NewRequested(events.Request{ID: id, Source: "/torture", Subject: subject, ContentType: "application/octet-stream", Time: t, Data: data})
		if err != nil {
			l.fail("NewRequested: %v", err)
			return
		}
		msg, err := ev.Msg(id)
		if err != nil {
			l.fail("Msg: %v", err)
			return
		}
		if err := l.publish(ctx, msg); err != nil {
			if ctx.Err() == nil {
				l.fail("direct upload %s: %v", id, err)
			}
			continue
		}
		l.mu.Lock()
		l.direct[id] = ev
		l.mu.Unlock()
		l.accept(checker.Upload{ID: id, Subject: subject, SHA256: ev.SHA256, Size: int64(len(data)), Time: t, Via: "direct"})
	}
}

// republish publishes the stored request of a random accepted upload again,
// with its headers but a new Nats-Msg-Id, as blobrefctl replay does.
func (l *load) republish(ctx context.Context, rng *rand.Rand) {
	l.mu.Lock()
	if len(l.accepted) == 0 {
		l.mu.Unlock()
		return
	}
	u := l.accepted[rng.IntN(len(l.accepted))]
	n := l.republishes
	poisoned := l.poisoned[u.ID]
	l.mu.Unlock()
	if poisoned {
		// Its last request is the poison event: republishing it would be
		// another poison, not a replay of the accepted upload.
		return
	}
	var raw *jetstream.RawStreamMsg
	start := time.Now()
	for {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := l.js.Stream(gctx, events.StreamName)
		if err == nil {
			raw, err = s.GetLastMsgForSubject(gctx, events.RequestedSubject(u.ID))
		}
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, jetstream.ErrMsgNotFound) || time.Since(start) > giveUpAfter {
			l.fail("republish %s: stored request: %v", u.ID, err)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	msg := nats.NewMsg(raw.Subject)
	for k, vs := range raw.Header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		msg.Header[k] = vs
	}
	msg.Data = raw.Data
	msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("torture-republish-%d-%d-%d", l.seed, n, rng.Int64()))
	if err := l.publish(ctx, msg); err != nil {
		if ctx.Err() == nil {
			l.fail("republish %s: %v", u.ID, err)
		}
		return
	}
	l.mu.Lock()
	l.republishes++
	l.mu.Unlock()
}

// sendPoison sends an event that must be refused: alternately the id of a
// completed direct upload with other bytes (conflict), and a new id whose
// sha256 does not match its bytes (digest_mismatch), which it also sends
// when no completed upload can be found.
func (l *load) sendPoison(ctx context.Context, rng *rand.Rand, tag string) {
	l.mu.Lock()
	n := len(l.poison)
	l.mu.Unlock()
	data := payload(rng, "poison")
	if len(data) > 16<<10 {
		data = data[:16<<10]
	}
	var (
		ev, orig *events.Event
		reason   string
		err      error
	)
	if n%2 == 0 {
		// nil when no direct upload has completed yet, or Postgres is down
		// right now: a digest mismatch instead, so that a short run's few
		// poison turns each send one.
		orig = l.completedDirect(ctx, rng)
	}
	if orig != nil {
		ev, err = events.NewRequested(events.Request{ID: orig.ID, Source: "/torture/poison", Subject: orig.Subject, ContentType: "application/octet-stream", Time: orig.Time, Data: data})
		reason = events.ReasonConflict
		l.mu.Lock()
		l.poisoned[orig.ID] = true // before it is published: no republish may pick it up as the upload's
		l.mu.Unlock()
	} else {
		id := fmt.Sprintf("p%d-%s", l.seed, tag)
		ev, err = events.NewRequested(events.Request{ID: id, Source: "/torture/poison", Subject: l.subjects[0], ContentType: "application/octet-stream", Data: data})
		reason = events.ReasonDigestMismatch
	}
	if err != nil {
		l.fail("poison: %v", err)
		return
	}
	msg, err := ev.Msg(fmt.Sprintf("torture-poison-%d-%s", l.seed, tag))
	if err != nil {
		l.fail("poison: %v", err)
		return
	}
	sha := ev.SHA256
	if reason == events.ReasonDigestMismatch {
		bad := sha256.Sum256(append([]byte("not "), data...))
		sha = hex.EncodeToString(bad[:])
		msg.Header.Set("ce-sha256", sha)
	}
	if err := l.publish(ctx, msg); err != nil {
		if ctx.Err() == nil {
			l.fail("poison %s: %v", ev.ID, err)
		}
		return
	}
	l.mu.Lock()
	l.poison = append(l.poison, checker.Poison{ID: ev.ID, SHA256: sha, Reason: reason})
	l.mu.Unlock()
}

// completedDirect returns a random direct upload whose reference row
// exists, or nil when none is found (or Postgres is down right now).
func (l *load) completedDirect(ctx context.Context, rng *rand.Rand) *events.Event {
	l.mu.Lock()
	ids := make([]string, 0, len(l.direct))
	for id := range l.direct {
		if !l.poisoned[id] {
			ids = append(ids, id)
		}
	}
	l.mu.Unlock()
	for range 10 {
		if len(ids) == 0 {
			return nil
		}
		id := ids[rng.IntN(len(ids))]
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var one int
		err := l.db.QueryRow(qctx, `SELECT 1 FROM upload_refs WHERE id = $1`, id).Scan(&one)
		cancel()
		if err == nil {
			l.mu.Lock()
			ev := l.direct[id]
			l.mu.Unlock()
			return ev
		}
	}
	return nil
}
