package step

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// RetentionMargin is what the retention horizon adds to the UPLOADS
// stream's max age: room for an event that reached the stream late after
// its time (a producer's retry, the clock skew consumers allow).
const RetentionMargin = 24 * time.Hour

// Horizon is how long the step tables keep what a delivery may still need,
// for a stream that keeps events for maxAge: maxAge plus RetentionMargin;
// 0 (forever) when the stream keeps events forever. A runner refuses an
// event whose time lies further back (reason events.ReasonExpired), so a
// retention job may delete what is older without a replay ever running a
// step again whose marker it deleted.
func Horizon(maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		return 0
	}
	return maxAge + RetentionMargin
}

// StreamHorizon reads the UPLOADS stream's max age from JetStream and
// returns its Horizon, and the stream's information.
func StreamHorizon(ctx context.Context, js jetstream.JetStream) (time.Duration, *jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return 0, nil, fmt.Errorf("step: stream %s: %w", events.StreamName, err)
	}
	info := s.CachedInfo()
	return Horizon(info.Config.MaxAge), info, nil
}

// Purge says which rows of the step tables a retention job deletes: the
// markers recorded before Before and the excused deliveries last written
// before it, or of a message of UPLOADS below FirstSeq (gone from the
// stream). DryRun counts them instead.
type Purge struct {
	Before   time.Time
	FirstSeq uint64
	DryRun   bool
}

// Purged counts the rows a Purge deleted, or would delete.
type Purged struct {
	Markers int64 // step_markers
	Excuses int64 // excused_deliveries
}

// PurgeRecords deletes the rows of the step tables in pool's schema that p
// selects, in one transaction. Before must be at least the Horizon (plus
// the clock skew the steps allow) in the past: a marker younger than that
// may still be needed by an event a runner accepts.
func PurgeRecords(ctx context.Context, pool *pgxpool.Pool, p Purge) (Purged, error) {
	n, err := marker.NewStore(pool).Purge(ctx, marker.Purge{
		Before: p.Before, Stream: events.StreamName, FirstSeq: p.FirstSeq, DryRun: p.DryRun,
	})
	return Purged{Markers: n.Markers, Excuses: n.Excuses}, err
}

// expired refuses ev when its time lies beyond the runner's horizon: its
// markers may have been deleted, and running the step again could repeat a
// side effect that finished.
func (r *Runner[R]) expired(ev *events.Event, now time.Time) error {
	h := time.Duration(r.horizon.Load())
	if h <= 0 || !ev.Time.Before(now.Add(-h)) {
		return nil
	}
	return Permanent(events.ReasonExpired, fmt.Errorf("event time %s is more than %s ago, the retention horizon (%s max age + %s)",
		ev.Time.UTC().Format(time.RFC3339), h, events.StreamName, RetentionMargin))
}

// horizonEvery is how often a runner reads the stream's max age again, so
// that a changed STREAM_MAX_AGE takes effect without a restart.
const horizonEvery = 5 * time.Minute

// loadHorizon reads the stream's max age into the runner's horizon,
// waiting while JetStream does not answer; an error it answers with (such
// as a permission it refuses) is returned.
func (r *Runner[R]) loadHorizon(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for {
		h, _, err := StreamHorizon(ctx, r.js)
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			r.horizon.Store(int64(h))
			return nil
		case ctx.Err() != nil, errors.Is(err, nats.ErrPermissionViolation),
			errors.As(err, &apiErr) && apiErr.Code != http.StatusServiceUnavailable:
			return err
		}
		r.opts.Logger.Warn("stream not read yet, retrying", "step", r.step.Name, "error", err, "delay", delay)
		sleep(ctx, delay)
		delay = min(2*delay, 5*time.Second)
	}
}

// refreshHorizon reads the stream's max age again every horizonEvery until
// ctx is done; a failed read keeps the horizon it had.
func (r *Runner[R]) refreshHorizon(ctx context.Context) {
	t := time.NewTicker(horizonEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		rctx, cancel := context.WithTimeout(ctx, r.opts.ProbeTimeout)
		h, _, err := StreamHorizon(rctx, r.js)
		cancel()
		if err == nil {
			r.horizon.Store(int64(h))
		}
	}
}
