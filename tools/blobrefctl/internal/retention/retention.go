// Package retention is blobrefctl's retention job: it deletes the records
// no replay can reach any more, those older than the retention horizon (the
// UPLOADS stream's max age, read from JetStream, plus a margin): the steps'
// markers and excused deliveries (package step's tables) and ingest's
// records of published uploads and its lapsed leases. The step runtime
// refuses an event older than the horizon (reason expired), so a deleted
// marker never lets a step run twice. References and their history are the
// service's data and are kept; dead letters live as long as UPLOADS_DLQ
// keeps them (its max age). docs/retention.md says why.
package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// Job is one run of the retention job.
type Job struct {
	Pool *pgxpool.Pool // blobref's Postgres, its schema first in the search_path
	JS   jetstream.JetStream
	// Margin is what the horizon adds to the stream's max age; at least
	// (and by default) step.RetentionMargin, the runners' own.
	Margin time.Duration
	// MaxClockSkew is how far in the future the steps accept an event's
	// time (MAX_CLOCK_SKEW) [events.DefaultMaxClockSkew]: a marker may be
	// that much older than its event's time, so the job keeps it that much
	// longer.
	MaxClockSkew time.Duration
	DryRun       bool             // count what would go; delete nothing
	Now          func() time.Time // [time.Now]
}

// Report is what a run found and deleted (on a dry run, would delete).
type Report struct {
	MaxAge    time.Duration // UPLOADS' max age, as JetStream has it
	Horizon   time.Duration // MaxAge + Margin; 0: the stream keeps events forever
	Cutoff    time.Time     // rows older than it go
	FirstSeq  uint64        // UPLOADS' first stored sequence
	DLQMaxAge time.Duration // how long UPLOADS_DLQ keeps dead letters

	Markers     int64 // step markers
	Excuses     int64 // excused deliveries
	Uploads     int64 // ingest records of published uploads
	Leases      int64 // lapsed ingest leases
	Unpublished int64 // kept: ingest records older than Cutoff never published (the completer's)
}

// Run deletes what the horizon leaves behind, or counts it on a dry run. It
// is idempotent: a second run finds nothing more than time has aged since.
// A stream that keeps events forever (max age 0) has no horizon: nothing is
// deleted.
func (j Job) Run(ctx context.Context) (Report, error) {
	if j.Margin < step.RetentionMargin {
		return Report{}, fmt.Errorf("retention: margin %s is less than the step runners' %s: markers of events they still run would go", j.Margin, step.RetentionMargin)
	}
	skew := j.MaxClockSkew
	if skew <= 0 {
		skew = events.DefaultMaxClockSkew
	}
	now := time.Now
	if j.Now != nil {
		now = j.Now
	}
	var r Report
	_, info, err := step.StreamHorizon(ctx, j.JS)
	if err != nil {
		return Report{}, fmt.Errorf("retention: %w", err)
	}
	r.MaxAge, r.FirstSeq = info.Config.MaxAge, info.State.FirstSeq
	if dlq, err := j.JS.Stream(ctx, events.DLQStreamName); err == nil {
		r.DLQMaxAge = dlq.CachedInfo().Config.MaxAge
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return Report{}, fmt.Errorf("retention: stream %s: %w", events.DLQStreamName, err)
	}
	if r.MaxAge <= 0 {
		return r, nil
	}
	r.Horizon = r.MaxAge + j.Margin
	r.Cutoff = now().Add(-r.Horizon - skew)

	purged, err := step.PurgeRecords(ctx, j.Pool, step.Purge{Before: r.Cutoff, FirstSeq: r.FirstSeq, DryRun: j.DryRun})
	if err != nil {
		return r, fmt.Errorf("retention: %w", err)
	}
	r.Markers, r.Excuses = purged.Markers, purged.Excuses
	if err := j.ingest(ctx, &r); err != nil {
		return r, fmt.Errorf("retention: %w", err)
	}
	return r, nil
}

// The ingest records the job deletes: a published upload's, whose request
// event (its time is the record's created_at) is past the horizon, and a
// lease that lapsed before it. A record never published is kept however old:
// ingest's completer publishes it, and the steps then dead-letter it as
// expired, so that it ends with a reason rather than silently. A record
// deleted leaves ingest's list of incomplete uploads too (a dead-lettered
// upload's, say): the completer has nothing to resume without it.
const (
	ingestUploads     = `FROM ingest_uploads WHERE created_at < $1 AND published_at IS NOT NULL`
	ingestIncomplete  = `DELETE FROM ingest_incomplete WHERE id IN (SELECT id ` + ingestUploads + `)`
	ingestLeases      = `FROM ingest_leases WHERE expires_at < $1`
	ingestUnpublished = `SELECT count(*) FROM ingest_uploads WHERE created_at < $1 AND published_at IS NULL`
)

// ingest deletes (counts) ingest's records past the cutoff, in one
// transaction.
func (j Job) ingest(ctx context.Context, r *Report) error {
	err := pgx.BeginFunc(ctx, j.Pool, func(tx pgx.Tx) error {
		if !j.DryRun {
			if _, err := tx.Exec(ctx, ingestIncomplete, r.Cutoff); err != nil {
				return err
			}
		}
		for _, q := range []struct {
			from string
			n    *int64
		}{{ingestUploads, &r.Uploads}, {ingestLeases, &r.Leases}} {
			if j.DryRun {
				if err := tx.QueryRow(ctx, "SELECT count(*) "+q.from, r.Cutoff).Scan(q.n); err != nil {
					return err
				}
				continue
			}
			tag, err := tx.Exec(ctx, "DELETE "+q.from, r.Cutoff)
			if err != nil {
				return err
			}
			*q.n = tag.RowsAffected()
		}
		return tx.QueryRow(ctx, ingestUnpublished, r.Cutoff).Scan(&r.Unpublished)
	})
	if err != nil {
		return fmt.Errorf("ingest records: %w", err)
	}
	return nil
}
