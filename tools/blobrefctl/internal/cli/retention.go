package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/tools/blobrefctl/internal/retention"
)

// retentionCommand is retention's help.
var retentionCommand = commandSpec{
	name:     "retention",
	synopsis: "blobrefctl retention [--margin D] [--dry-run]",
	about: `Delete the records no replay can reach any more: those older than the
retention horizon, the UPLOADS stream's max age (read from JetStream) plus D,
and the clock skew the steps allow (MAX_CLOCK_SKEW):

  step markers          recorded before the horizon
  excused deliveries    written before it, or of messages gone from UPLOADS
  ingest uploads        published uploads recorded before it (one never
                        published is kept: the completer still publishes it)
  ingest leases         lapsed before it

The steps refuse an event older than the horizon (dead letter, reason
expired), so no replay runs a step again whose marker is gone. References
are kept; dead letters live as long as UPLOADS_DLQ keeps them (DLQ_MAX_AGE).
A stream that keeps events forever has no horizon: nothing is deleted.

Run it daily (the Kubernetes CronJob blobref-retention, or compose's
"retention" service). It is idempotent. docs/retention.md says more.`,
}

// parseRetention parses retention's flags.
func parseRetention(args []string, help io.Writer) (Command, error) {
	c := Command{Name: "retention"}
	fs := flag.NewFlagSet("blobrefctl retention", flag.ContinueOnError)
	fs.DurationVar(&c.Retention.Margin, "margin", step.RetentionMargin,
		fmt.Sprintf("what the horizon adds to the stream's max age (at least %s, the steps' own)", step.RetentionMargin))
	fs.BoolVar(&c.Retention.DryRun, "dry-run", false, "count what would be deleted; delete nothing")
	if err := parseFlags(fs, args, retentionCommand, help); err != nil {
		return Command{}, err
	}
	switch {
	case c.Retention.Margin < step.RetentionMargin:
		return Command{}, fmt.Errorf("%w: --margin: %s is less than the steps' %s", errUsage, c.Retention.Margin, step.RetentionMargin)
	}
	return c, nil
}

// RetentionFlags are retention's flags.
type RetentionFlags struct {
	Margin time.Duration
	DryRun bool
}

// retain runs the retention job on databaseURL's Postgres and writes what
// it deleted to w.
func (c Command) retain(ctx context.Context, cfg *config, js jetstream.JetStream, w io.Writer) error {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	pool, err := pgxpool.New(cctx, cfg.DatabaseURL)
	if err == nil {
		err = pool.Ping(cctx)
	}
	cancel()
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer pool.Close()
	job := retention.Job{Pool: pool, JS: js, Margin: c.Retention.Margin, MaxClockSkew: cfg.MaxClockSkew, DryRun: c.Retention.DryRun}
	r, err := job.Run(ctx)
	if err != nil {
		return err
	}
	if r.Horizon == 0 {
		fmt.Fprintf(w, "%s keeps events forever (max age 0): no horizon, nothing deleted\n", events.StreamName)
		return nil
	}
	fmt.Fprintf(w, "horizon %s (%s max age %s + margin %s); deleting what is older than %s\n",
		r.Horizon, events.StreamName, r.MaxAge, c.Retention.Margin, stamp(r.Cutoff))
	verb := "deleted"
	if c.Retention.DryRun {
		verb = "dry run: would delete"
	}
	fmt.Fprintf(w, "%s %d step %s, %d excused %s, %d ingest %s, %d ingest %s\n", verb,
		r.Markers, plural(int(r.Markers), "marker"), r.Excuses, plural(int(r.Excuses), "delivery record"),
		r.Uploads, plural(int(r.Uploads), "upload"), r.Leases, plural(int(r.Leases), "lease"))
	if r.Unpublished > 0 {
		fmt.Fprintf(w, "kept %d ingest %s older than the horizon that JetStream never acknowledged (the completer publishes them; blobrefctl stuck lists them)\n",
			r.Unpublished, plural(int(r.Unpublished), "upload"))
	}
	if r.DLQMaxAge > 0 {
		fmt.Fprintf(w, "dead letters: %s keeps them for %s\n", events.DLQStreamName, r.DLQMaxAge)
	}
	return nil
}
