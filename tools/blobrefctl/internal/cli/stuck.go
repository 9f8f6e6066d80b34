package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/blobref/blobref/internal/uploadview"
)

// stuckCommand is stuck's help.
var stuckCommand = commandSpec{
	name:     "stuck",
	synopsis: "blobrefctl stuck [--older-than D] [--limit N] [--json]",
	about: `List the uploads that have not completed, oldest first, with how long each
has been where it is and why:

  unpublished     ingest recorded it; JetStream never acknowledged its request
                  (a crash or an outage between the two)
  not_stored      its request is published; blobwriter stored no blob
  not_referenced  its blob is stored; refwriter recorded no reference
  dead_letter     a step dead-lettered one of its events, and nothing was
                  published for it since (blobrefctl dlq redrive sends it again)

Only uploads stuck for at least D are listed. Uploads that producers other
than ingest published show up once their blob is stored, or dead-lettered;
until then the consumers' lag counts them (blobrefctl console shows it).`,
}

// defaultStuckAge is stuck's --older-than by default: longer than a step
// takes when all is well.
const defaultStuckAge = 5 * time.Minute

// parseStuck parses stuck's flags.
func parseStuck(args []string, help io.Writer) (Command, error) {
	c := Command{Name: "stuck"}
	fs := flag.NewFlagSet("blobrefctl stuck", flag.ContinueOnError)
	fs.DurationVar(&c.Stuck.OlderThan, "older-than", defaultStuckAge, "list only uploads stuck for at least this long (0 lists all)")
	fs.IntVar(&c.Stuck.Limit, "limit", 100, "list at most this many")
	fs.BoolVar(&c.JSON, "json", false, "print a JSON array, one object per upload")
	if err := parseFlags(fs, args, stuckCommand, help); err != nil {
		return Command{}, err
	}
	switch {
	case c.Stuck.OlderThan < 0:
		return Command{}, fmt.Errorf("%w: --older-than: must not be negative", errUsage)
	case c.Stuck.Limit < 1:
		return Command{}, fmt.Errorf("%w: --limit: must be at least 1", errUsage)
	}
	return c, nil
}

// stuck lists the stuck uploads on w.
func (c Command) stuck(ctx context.Context, v *uploadview.View, w io.Writer) error {
	list, more, err := v.Stuck(ctx, c.Stuck)
	if err != nil {
		return err
	}
	if c.JSON {
		if list == nil {
			list = []uploadview.Stuck{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGE\tKIND\tID\tSUBJECT\tSINCE\tWHY")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Age.Round(time.Second), s.Kind, s.ID, s.Subject, stamp(s.Since), s.Why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d stuck %s older than %s", len(list), plural(len(list), "upload"), c.Stuck.OlderThan)
	if more {
		fmt.Fprintf(w, " (more than --limit %d: the oldest shown)", c.Stuck.Limit)
	}
	fmt.Fprintln(w)
	return nil
}
