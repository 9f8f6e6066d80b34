package uploads

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobref/blobref/pkg/events"
)

// The kinds of uploads the completer resumes.
const (
	// KindUnpublished: recorded, and JetStream never acknowledged its
	// request (the request that recorded it died or gave up).
	KindUnpublished = "unpublished"
	// KindStalled: published, and not completed a horizon later.
	KindStalled = "stalled"
)

const (
	// completerPage is the most uploads a round claims at once.
	completerPage = 64
	// The defaults of Completer.
	defaultCompleterInterval = 30 * time.Second
	defaultCompleterHorizon  = 15 * time.Minute
)

// errBodyGone: an inline upload's bytes are neither in the outbox nor in
// its request event in UPLOADS any more (aged out or lost).
var errBodyGone = errors.New("the inline bytes are neither in the outbox nor in UPLOADS")

// Completer resumes, without waiting for a client, the uploads nobody is
// finishing: those recorded whose request JetStream never acknowledged once
// their claim has lapsed (KindUnpublished: published from the outbox bytes
// or the dataref), and those published and not completed Horizon later
// (KindStalled: published again as a new message, which the pipeline's
// markers make safe; the bytes of an inline one come from its request event
// in UPLOADS). A dead-lettered upload is final and left alone.
//
// Every ingest replica runs one. A round claims its uploads with
// SELECT ... FOR UPDATE SKIP LOCKED and the record's claim, the same claim a
// request holds while it publishes, so that no two replicas resume one
// upload at once; it publishes them through the service's batches, as a
// client's retry would. A stalled upload is looked at once per Horizon at
// most: its publish, or a claim deferred by Horizon when it cannot be
// resumed, keeps it out until then.
type Completer struct {
	Service *Service
	// Interval is how often a round runs [30s]; the first runs at once.
	Interval time.Duration
	// Horizon is how long a published upload may be pending before the
	// completer publishes its request again [15m]. It should be at least
	// the service's RedriveAfter.
	Horizon time.Duration
	// Metrics, if set, counts what the rounds find and resume.
	Metrics *CompleterMetrics
	// Logger logs each resumed upload [slog.Default()].
	Logger *slog.Logger
}

func (c *Completer) interval() time.Duration {
	if c.Interval > 0 {
		return c.Interval
	}
	return defaultCompleterInterval
}

func (c *Completer) horizon() time.Duration {
	if c.Horizon > 0 {
		return c.Horizon
	}
	return defaultCompleterHorizon
}

func (c *Completer) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// claimTTL is how long a round's claim lasts: the lookups of a page, then
// its batch.
func (c *Completer) claimTTL() time.Duration {
	return c.Service.publishTimeout() + c.Service.recordTimeout() + 5*time.Second
}

// Run runs a round at once and then every Interval until ctx is done. A
// round that fails (Postgres is down) is logged and tried again at the next.
func (c *Completer) Run(ctx context.Context) error {
	c.Service.init()
	tick := time.NewTicker(c.interval())
	defer tick.Stop()
	for {
		if _, err := c.round(ctx); err != nil && ctx.Err() == nil {
			c.logger().Warn("completer round failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// roundResult is what a round found and resumed, by kind.
type roundResult struct {
	found, resumed map[string]int
}

// round takes off the list of incomplete uploads those the read model
// could not take off (markCompleted), then claims the due uploads a page at
// a time, resumes those neither completed nor dead-lettered, and finally
// releases the claims of the ones it did not publish (or defers those of
// stalled uploads it cannot resume).
// A page's claims hold the uploads until the round ends, so that the next
// page finds others; the round stops taking pages after half a claimTTL.
func (c *Completer) round(ctx context.Context) (roundResult, error) {
	c.Service.init()
	res := roundResult{found: map[string]int{}, resumed: map[string]int{}}
	var done []*candidate
	defer func() {
		c.release(ctx, done)
		c.Metrics.roundDone(res)
	}()
	if err := c.markCompleted(ctx); err != nil {
		return res, err
	}
	stop := time.Now().Add(c.claimTTL() / 2)
	for time.Now().Before(stop) {
		page, err := c.claim(ctx)
		if err != nil {
			return res, err
		}
		c.resumeAll(ctx, page)
		for _, cand := range page {
			if cand.found {
				res.found[cand.kind]++
			}
			if cand.resumed {
				res.resumed[cand.kind]++
			}
		}
		done = append(done, page...)
		if len(page) < completerPage {
			break
		}
	}
	return res, nil
}

// candidate is an upload a round claimed.
type candidate struct {
	snap    snapshot
	payload []byte    // the outbox
	claim   time.Time // the claimed_until the round set
	kind    string

	// found: neither completed nor dead-lettered, to be resumed.
	found bool
	// resumed: JetStream acknowledged its request again.
	resumed bool
	// later: not to be looked at again before the horizon (a stalled
	// upload that is dead-lettered or whose bytes are gone).
	later bool
}

// claimDue claims up to $2 uploads that are not completed and are due: never
// published (and no request publishing them: their claim has lapsed), or
// published before $1. The select skips rows other transactions hold and
// the update sets their claim, so that another replica's round, a request
// with the key or a later page skips them too. The rows are read as they
// were before the claim (one snapshot for the whole statement).
//
// It reads only the uploads listed incomplete (ingest_incomplete), so that
// a round costs the uploads not finished rather than all those kept until
// the retention job deletes them; the read model's word (snapshotCompleted)
// still decides, for an upload markCompleted has not taken off the list
// yet.
const claimDue = `
WITH due AS (
	SELECT u.id FROM ingest_incomplete i
	JOIN ingest_uploads u ON u.id = i.id` + snapshotJoins + `
	WHERE (u.claimed_until IS NULL OR u.claimed_until <= now())
	  AND (u.published_at IS NULL OR u.published_at <= $1)
	  AND NOT ` + snapshotCompleted + `
	LIMIT $2
	FOR UPDATE OF u SKIP LOCKED
), claimed AS (
	UPDATE ingest_uploads u SET claimed_until = now() + $3::bigint * interval '1 microsecond'
	FROM due WHERE u.id = due.id
	RETURNING u.id, u.claimed_until
)
SELECT c.claimed_until, u.payload, ` + snapshotColumns + `
FROM claimed c
JOIN ingest_uploads u ON u.id = c.id` + snapshotJoins

// markCompleted takes off the list of incomplete uploads those the read
// model says completed and that the read model's statement did not take off
// (another statement held their row then; see readmodel's upsert). Like the
// read model, it skips rows other transactions hold: a later round takes
// them off. It reads the list and the read model's rows of its uploads only.
const markCompleted = `
WITH done AS (
	SELECT i.id FROM ingest_incomplete i JOIN ingest_upload_view rm ON rm.id = i.id
	WHERE ` + snapshotCompleted + `
	ORDER BY i.id
	FOR UPDATE OF i SKIP LOCKED
)
DELETE FROM ingest_incomplete i WHERE i.id = ANY (ARRAY(SELECT id FROM done))`

func (c *Completer) markCompleted(ctx context.Context) error {
	if _, err := c.Service.Pool.Exec(ctx, markCompleted); err != nil {
		return unavailable("mark completed uploads", err)
	}
	return nil
}

func (c *Completer) claim(ctx context.Context) ([]*candidate, error) {
	cutoff := c.Service.now().Add(-c.horizon())
	rows, err := c.Service.Pool.Query(ctx, claimDue, cutoff, completerPage, c.claimTTL().Microseconds())
	if err != nil {
		return nil, unavailable("claim due uploads", err)
	}
	var (
		page    []*candidate
		claim   time.Time
		payload []byte
		scan    snapshotScan
	)
	_, err = pgx.ForEachRow(rows, append([]any{&claim, &payload}, scan.targets()...), func() error {
		snap, ok := scan.snapshot()
		if !ok {
			return errors.New("claimed an upload without a record")
		}
		kind := KindStalled
		if snap.PublishedAt == nil {
			kind = KindUnpublished
		}
		page = append(page, &candidate{snap: snap, payload: bytes.Clone(payload), claim: claim, kind: kind})
		return nil
	})
	if err != nil {
		return nil, unavailable("claim due uploads", err)
	}
	return page, nil
}

// resumeAll resumes the candidates of a page at once, so that their
// publishes share batches.
func (c *Completer) resumeAll(ctx context.Context, page []*candidate) {
	var wg sync.WaitGroup
	for _, cand := range page {
		wg.Go(func() { c.resume(ctx, cand) })
	}
	wg.Wait()
}

// resume publishes cand's request again unless it completed or was
// dead-lettered meanwhile, and logs the outcome.
func (c *Completer) resume(ctx context.Context, cand *candidate) {
	s := c.Service
	log := c.logger().With("upload_id", cand.snap.ID, "kind", cand.kind)
	lctx, cancel := context.WithTimeout(ctx, s.publishTimeout())
	// The read model may be behind (ingest just restarted): an upload whose
	// completed event is in UPLOADS is not resumed.
	st := s.catchUp(lctx, cand.snap.state())
	var (
		inline []byte
		err    error
	)
	if st.State != StateCompleted && st.State != StateFailed {
		cand.found = true
		c.Metrics.found(cand.kind)
		inline, err = c.body(lctx, cand)
	}
	cancel()
	switch {
	case errors.Is(err, errBodyGone):
		cand.later = cand.kind == KindStalled
		log.Warn("cannot resume upload: its client must send the bytes again", "error", err)
		return
	case err != nil:
		if ctx.Err() == nil { // not a shutdown
			log.Warn("cannot resume upload", "error", err)
		}
		return
	case !cand.found:
		cand.later = st.State == StateFailed && cand.kind == KindStalled
		return
	}
	j := &job{ctx: context.WithoutCancel(ctx), rec: cand.snap.record, inline: inline}
	s.batches.do(j)
	if j.err != nil {
		log.Warn("cannot resume upload", "error", j.err)
		return
	}
	cand.resumed = true
	c.Metrics.resumed(cand.kind)
	attrs := []any{"publish", cand.snap.PublishCount + 1, "created_at", cand.snap.CreatedAt}
	if cand.snap.PublishedAt != nil {
		attrs = append(attrs, "pending_for", j.at.Sub(*cand.snap.PublishedAt).Round(time.Second))
	}
	log.Info("resumed upload", attrs...)
}

// body returns the inline bytes to publish cand's request with: none for a
// staged upload (its dataref names them), the outbox's while JetStream has
// not acknowledged the request, and otherwise those of its request event in
// UPLOADS, which must match the record's fingerprint.
func (c *Completer) body(ctx context.Context, cand *candidate) ([]byte, error) {
	rec := cand.snap.record
	switch {
	case rec.DataRef != "":
		return nil, nil
	case cand.payload != nil:
		return cand.payload, nil
	}
	stream, err := c.Service.uploadsStream(ctx)
	if err != nil {
		return nil, unavailable("look up UPLOADS", err)
	}
	raw, err := stream.GetLastMsgForSubject(ctx, events.RequestedSubject(rec.ID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, errBodyGone
	}
	if err != nil {
		return nil, unavailable("read the request event", err)
	}
	ev, err := events.Decode(raw.Subject, raw.Header, raw.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: the last request event does not decode: %w", errBodyGone, err)
	}
	sum := sha256.Sum256(ev.Data)
	if int64(len(ev.Data)) != rec.Size || hex.EncodeToString(sum[:]) != rec.SHA256 {
		return nil, fmt.Errorf("%w: the last request event holds other bytes", errBodyGone)
	}
	return ev.Data, nil
}

// releaseClaims ends the claims a round still holds ($2, the claimed_until
// it set: a claim that lapsed and was taken over is not touched): at once,
// or, for later, Horizon ($3) from now.
const releaseClaims = `
UPDATE ingest_uploads u
SET claimed_until = CASE WHEN v.later THEN now() + $4::bigint * interval '1 microsecond' END
FROM unnest($1::text[], $2::timestamptz[], $3::bool[]) AS v(id, claim, later)
WHERE u.id = v.id AND u.claimed_until = v.claim`

// release ends the claims of the candidates the round did not publish (a
// publish ended its claim), on a context of its own: a shutdown that stops
// the round must not leave them claimed. A failure leaves them to lapse.
func (c *Completer) release(ctx context.Context, done []*candidate) {
	var (
		ids    []string
		claims []time.Time
		later  []bool
	)
	for _, cand := range done {
		if !cand.resumed {
			ids, claims, later = append(ids, cand.snap.ID), append(claims, cand.claim), append(later, cand.later)
		}
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := c.Service.Pool.Exec(ctx, releaseClaims, ids, claims, later, c.horizon().Microseconds()); err != nil {
		c.logger().Warn("completer: release claims (they lapse on their own)", "uploads", len(ids), "error", err)
	}
}

// CompleterMetrics counts what the completer finds and resumes.
type CompleterMetrics struct {
	rounds                   prometheus.Counter
	foundTotal, resumedTotal *prometheus.CounterVec
	backlog                  *prometheus.GaugeVec
}

// NewCompleterMetrics registers the completer's metrics with reg.
func NewCompleterMetrics(reg prometheus.Registerer) (*CompleterMetrics, error) {
	m := &CompleterMetrics{
		rounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blobref_ingest_completer_rounds_total",
			Help: "Rounds the completer ran, failed ones included.",
		}),
		foundTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_ingest_completer_found_total",
			Help: "Uploads the completer found nobody finishing, by kind: unpublished (JetStream never acknowledged the request) or stalled (pending past the horizon); an upload counts in each round that finds it.",
		}, []string{"kind"}),
		resumedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_ingest_completer_resumed_total",
			Help: "Uploads whose request the completer published again (JetStream acknowledged it), by kind.",
		}, []string{"kind"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blobref_ingest_completer_backlog",
			Help: "Uploads the completer's last round found nobody finishing, by kind.",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.rounds, m.foundTotal, m.resumedTotal, m.backlog} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, kind := range []string{KindUnpublished, KindStalled} {
		m.foundTotal.WithLabelValues(kind)
		m.resumedTotal.WithLabelValues(kind)
		m.backlog.WithLabelValues(kind)
	}
	return m, nil
}

func (m *CompleterMetrics) found(kind string) {
	if m != nil {
		m.foundTotal.WithLabelValues(kind).Inc()
	}
}

func (m *CompleterMetrics) resumed(kind string) {
	if m != nil {
		m.resumedTotal.WithLabelValues(kind).Inc()
	}
}

// roundDone sets the backlog to what the round found, and counts the round.
func (m *CompleterMetrics) roundDone(res roundResult) {
	if m == nil {
		return
	}
	for _, kind := range []string{KindUnpublished, KindStalled} {
		m.backlog.WithLabelValues(kind).Set(float64(res.found[kind]))
	}
	m.rounds.Inc()
}
