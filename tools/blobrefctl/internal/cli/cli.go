// Package cli is blobrefctl's command line: it parses a command and its
// flags, connects to NATS (and for stuck and console to Postgres) with the
// settings the services read, and runs the command with package republish,
// package uploadview, package console, or (setup) with service.Setup.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/stepservice"
	"github.com/blobref/blobref/pkg/step/stepservice/buildinfo"
	"github.com/blobref/blobref/tools/blobrefctl/internal/console"
	"github.com/blobref/blobref/tools/blobrefctl/internal/republish"
)

// connectTimeout bounds how long blobrefctl tries to reach NATS.
const connectTimeout = 15 * time.Second

// Reasons are the dead-letter reasons a --reason flag accepts.
var Reasons = []string{
	events.ReasonMalformed, events.ReasonInvalid, events.ReasonUnknownType, events.ReasonTooLarge,
	events.ReasonConflict, events.ReasonDigestMismatch, events.ReasonClaimMissing, events.ReasonRetriesExhausted,
	events.ReasonExpired,
}

// usage is blobrefctl's own help: the commands, one line each.
const usage = `blobrefctl sets up blobref's streams and consumers, publishes its events
again, as an operator replays them, lists the uploads that are stuck and
serves the operators' web console.

Usage:
  blobrefctl replay --subject S (--since T [--until T] | --last) [--dry-run]
  blobrefctl dlq list [--reason R] [--subject S] [--seq N]
  blobrefctl dlq redrive [--reason R] [--subject S] [--seq N] [--dry-run]
  blobrefctl stuck [--older-than D] [--limit N] [--json]
  blobrefctl console [--addr A] [--tokens-file F]
  blobrefctl setup [--timeout D]
  blobrefctl retention [--margin D] [--dry-run]
  blobrefctl help [command]     this help, or a command's (as: blobrefctl <command> -h)
  blobrefctl --version

Commands:
  replay       publish stored events of UPLOADS again, with new Nats-Msg-Ids
  dlq list     list the dead letters in UPLOADS_DLQ
  dlq redrive  publish dead letters again to their original subjects
  stuck        list the uploads that have not completed, and why
  console      serve the operators' web console (uploads, consumers, dead letters)
  setup        create or update the streams, the staging bucket and the durable consumers
  retention    delete the markers and ingest records older than the retention horizon

` + connection

// connection says how blobrefctl reaches NATS; every help text ends with it.
const connection = `blobrefctl reads NATS_URL (default nats://127.0.0.1:4222), NATS_CREDS,
NATS_NKEY, NATS_USER, NATS_PASSWORD or NATS_PASSWORD_FILE, NATS_TOKEN, NATS_CA,
NATS_CERT, NATS_KEY, NATS_TLS_FIRST and NATS_INBOX_PREFIX, as the services do.
stuck and console also read DATABASE_URL, the services' Postgres, in
read-only transactions; retention deletes from it.
`

// setupSettings are the settings setup reads besides the connection's.
const setupSettings = `setup also reads, with the services' names and defaults, the streams'
settings (STREAM_REPLICAS, STREAM_MAX_AGE, DLQ_MAX_AGE), the staging bucket's
(STAGING_BUCKET, STAGING_TTL, STAGING_MAX_BYTES) and the consumers' (CONSUMER_ACK_WAIT,
CONSUMER_MAX_IN_FLIGHT). It connects as NATS_USER (the "setup" user of
deploy/nats/nats.conf) with its replies on NATS_INBOX_PREFIX (_INBOX_setup).
`

// commandSpec is one command: its synopsis, what it does and its flags.
type commandSpec struct {
	name     string // "setup", "replay", "dlq list" or "dlq redrive"
	synopsis string
	about    string
}

// setupCommand is setup's help.
var setupCommand = commandSpec{
	name:     "setup",
	synopsis: "blobrefctl setup [--timeout D]",
	about: `Create, or update to the settings in the environment, what the services use
and, with NATS_SETUP=off, only look up: the streams UPLOADS and UPLOADS_DLQ,
the staging bucket and the durable consumers of blobwriter, refwriter and notifier.
Run it before the services start, and again after changing those settings
(a Kubernetes Job, or compose's one-shot service "setup", does). It is
idempotent. While NATS or JetStream is not ready, it tries again for D.

` + setupSettings,
}

var commands = []commandSpec{
	{
		name:     "replay",
		synopsis: "blobrefctl replay --subject S (--since T [--until T] | --last) [--dry-run]",
		about: `Publish the events of UPLOADS on subjects matching S again, oldest first,
each with its headers and body and a new Nats-Msg-Id. The steps' markers make
only the unfinished steps run.

S is a subject filter of UPLOADS, e.g. uploads.requested.> or
uploads.requested.<id>. T is an RFC 3339 time (2025-06-01T12:00:00Z) or a
duration ago (90m, 2h).`,
	},
	{
		name:     "dlq list",
		synopsis: "blobrefctl dlq list [--reason R] [--subject S] [--seq N]",
		about: `List the dead letters in UPLOADS_DLQ, one line each: sequence, time, reason,
step, deliveries, subject and error.

S filters the subjects the dead messages came from, e.g. uploads.requested.>
or uploads.requested.<id> (dlq.<subject> works too). N is the sequence of one
dead letter in UPLOADS_DLQ (the SEQ column). R is one of these reasons:
  {reasons}`,
	},
	{
		name:     "dlq redrive",
		synopsis: "blobrefctl dlq redrive [--reason R] [--subject S] [--seq N] [--dry-run]",
		about: `Publish each dead letter's original message again to its original subject
(its headers but Blobref-Dead-*, a new Nats-Msg-Id), then delete the dead
letter once UPLOADS has acked the publish.

S filters the subjects the dead messages came from, e.g. uploads.requested.>
or uploads.requested.<id> (dlq.<subject> works too). N is the sequence of one
dead letter in UPLOADS_DLQ (see dlq list). R is one of these reasons:
  {reasons}`,
	},
}

// Command is a parsed command line.
type Command struct {
	// Name is "setup", "replay", "dlq list", "dlq redrive", "stuck",
	// "console", "retention" or "version".
	Name    string
	Replay  republish.Replay
	Redrive republish.Redrive // the filter of "dlq list" too
	// Timeout is how long setup keeps trying while NATS is not ready.
	Timeout time.Duration
	// Stuck is what stuck lists; JSON prints it as JSON.
	Stuck uploadview.StuckQuery
	JSON  bool
	// Console is how console serves; empty fields take the environment's.
	Console ConsoleFlags
	// Retention is how retention runs.
	Retention RetentionFlags
}

// defaultSetupTimeout is setup's --timeout by default.
const defaultSetupTimeout = 2 * time.Minute

// errUsage marks a command line that does not parse; its text says why.
var errUsage = errors.New("usage")

// Parse parses the arguments after the program name. now is what a duration
// in --since and --until counts back from. A request for help (-h on its
// own or after a command, or help [command]) writes that help to help and
// returns flag.ErrHelp.
func Parse(args []string, now time.Time, help io.Writer) (Command, error) {
	bad := func(format string, a ...any) (Command, error) {
		return Command{}, fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
	}
	if len(args) == 0 {
		return bad("no command")
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprint(help, usage)
		return Command{}, flag.ErrHelp
	case "help":
		if len(args) == 1 {
			fmt.Fprint(help, usage)
			return Command{}, flag.ErrHelp
		}
		return Parse(append(slices.Clone(args[1:]), "-h"), now, help)
	case "-version", "--version", "version":
		if len(args) > 1 {
			return bad("unexpected argument %q", args[1])
		}
		return Command{Name: "version"}, nil
	}
	var spec commandSpec
	switch args[0] {
	case "setup":
		return parseSetup(args[1:], help)
	case "stuck":
		return parseStuck(args[1:], help)
	case "console":
		return parseConsole(args[1:], help)
	case "retention":
		return parseRetention(args[1:], help)
	case "replay":
		spec, args = commands[0], args[1:]
	case "dlq":
		if len(args) >= 2 && isHelp(args[1]) {
			writeHelp(help, commands[1], nil)
			fmt.Fprintln(help)
			writeHelp(help, commands[2], nil)
			fmt.Fprint(help, "\n"+connection)
			return Command{}, flag.ErrHelp
		}
		if len(args) < 2 || args[1] != "list" && args[1] != "redrive" {
			return bad("dlq takes list or redrive")
		}
		spec = commands[1]
		if args[1] == "redrive" {
			spec = commands[2]
		}
		args = args[2:]
	default:
		return bad("unknown command %q (replay, dlq list, dlq redrive, stuck, console, setup, retention)", args[0])
	}
	c := Command{Name: spec.name}

	fs := flag.NewFlagSet("blobrefctl "+c.Name, flag.ContinueOnError)
	var subject, reason, since, until string
	var last, dryRun bool
	var seq uint64
	if c.Name == "replay" {
		fs.StringVar(&subject, "subject", "", "replay the events on subjects matching this filter (required)")
		fs.StringVar(&since, "since", "", "replay the events stored since this time (RFC 3339, or a duration ago)")
		fs.StringVar(&until, "until", "", "and before this time")
		fs.BoolVar(&last, "last", false, "replay only the latest event of each subject")
	} else {
		fs.StringVar(&subject, "subject", "", "only dead letters of messages from subjects matching this filter")
		fs.StringVar(&reason, "reason", "", "only dead letters of this reason")
		fs.Uint64Var(&seq, "seq", 0, "only the dead letter at this sequence of UPLOADS_DLQ")
	}
	if c.Name != "dlq list" {
		fs.BoolVar(&dryRun, "dry-run", false, "show what would be published; publish and delete nothing")
	}
	if err := parseFlags(fs, args, spec, help); err != nil {
		return Command{}, err
	}

	if c.Name != "replay" {
		if reason != "" && !slices.Contains(Reasons, reason) {
			return bad("--reason: %q is not one of %s", reason, strings.Join(Reasons, ", "))
		}
		if subject != "" && !strings.HasPrefix(subject, "uploads.") && !strings.HasPrefix(subject, "dlq.uploads.") {
			return bad("--subject: %q is not a subject of UPLOADS (uploads.>) or UPLOADS_DLQ (dlq.uploads.>)", subject)
		}
		c.Redrive = republish.Redrive{DeadLetterFilter: uploadview.DeadLetterFilter{Subject: subject, Reason: reason, Seq: seq}, DryRun: dryRun}
		return c, nil
	}

	switch {
	case subject == "":
		return bad("--subject is required, e.g. --subject 'uploads.requested.>'")
	case !strings.HasPrefix(subject, "uploads."):
		return bad("--subject: %q is not a subject of UPLOADS (uploads.>)", subject)
	case since == "" && !last:
		return bad("give --since (replay what was stored since then) or --last (the latest event of each subject)")
	case since != "" && last:
		return bad("--since and --last exclude each other")
	case until != "" && since == "":
		return bad("--until goes with --since")
	}
	sel := republish.Selection{Subject: subject, Last: last}
	var err error
	if since != "" {
		if sel.Since, err = parseTime(since, now); err != nil {
			return bad("--since: %v", err)
		}
	}
	if until != "" {
		if sel.Until, err = parseTime(until, now); err != nil {
			return bad("--until: %v", err)
		}
		if !sel.Since.Before(sel.Until) {
			return bad("--since %s is not before --until %s", since, until)
		}
	}
	c.Replay = republish.Replay{Selection: sel, DryRun: dryRun}
	return c, nil
}

// parseSetup parses setup's flags.
func parseSetup(args []string, help io.Writer) (Command, error) {
	c := Command{Name: "setup"}
	fs := flag.NewFlagSet("blobrefctl setup", flag.ContinueOnError)
	fs.DurationVar(&c.Timeout, "timeout", defaultSetupTimeout, "how long to keep trying while NATS or JetStream is not ready")
	if err := parseFlags(fs, args, setupCommand, help); err != nil {
		return Command{}, err
	}
	switch {
	case c.Timeout <= 0:
		return Command{}, fmt.Errorf("%w: --timeout: must be positive", errUsage)
	}
	return c, nil
}

func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// writeHelp writes a command's help: its synopsis, what it does and, given
// its flag set, its flags.
func writeHelp(w io.Writer, spec commandSpec, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n\n", spec.synopsis)
	fmt.Fprintln(w, strings.ReplaceAll(spec.about, "{reasons}", strings.Join(Reasons, ", ")))
	if fs == nil {
		return
	}
	fmt.Fprint(w, "\nFlags (one dash or two):\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parseTime reads an RFC 3339 time, or a duration before now.
func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2025-06-01T12:00:00Z) nor a positive duration (90m)", s)
	}
	return now.Add(-d), nil
}

// Run runs the command against js and writes what it did to stdout.
func (c Command) Run(ctx context.Context, js jetstream.JetStream, stdout io.Writer) error {
	switch c.Name {
	case "replay":
		return c.replay(ctx, js, stdout)
	case "dlq list":
		return c.list(ctx, js, stdout)
	case "dlq redrive":
		return c.redrive(ctx, js, stdout)
	}
	return fmt.Errorf("unknown command %q", c.Name)
}

func (c Command) replay(ctx context.Context, js jetstream.JetStream, w io.Writer) error {
	n, err := c.Replay.Run(ctx, js, func(r republish.Replayed) {
		from := fmt.Sprintf("%s (%s #%d, stored %s)", r.Subject, events.StreamName, r.Seq, stamp(r.Stored))
		switch {
		case c.Replay.DryRun:
			fmt.Fprintf(w, "would replay %s\n", from)
		case r.Duplicate:
			fmt.Fprintf(w, "replayed %s: a duplicate of %s, not stored again\n", from, r.MsgID)
		default:
			fmt.Fprintf(w, "replayed %s as %s #%d, Nats-Msg-Id %s\n", from, events.StreamName, r.NewSeq, r.MsgID)
		}
	})
	if c.Replay.DryRun {
		fmt.Fprintf(w, "dry run: would replay %d %s\n", n, plural(n, "event"))
	} else {
		fmt.Fprintf(w, "replayed %d %s\n", n, plural(n, "event"))
	}
	return err
}

func (c Command) list(ctx context.Context, js jetstream.JetStream, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tDEAD AT\tREASON\tSTEP\tDELIVERIES\tSUBJECT\tERROR")
	n := 0
	err := uploadview.DeadLetters(ctx, js, c.Redrive.DeadLetterFilter, func(l uploadview.Letter) error {
		n++
		reason, msg := l.Reason, l.Error
		if l.Err != nil {
			reason, msg = "?", l.Err.Error()
		}
		at := l.Time
		if at.IsZero() {
			at = l.Stored
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", l.Seq, stamp(at), reason, l.Step, l.Deliveries, l.Subject, msg)
		return nil
	})
	if ferr := tw.Flush(); err == nil {
		err = ferr
	}
	fmt.Fprintf(w, "%d dead %s\n", n, plural(n, "letter"))
	return err
}

func (c Command) redrive(ctx context.Context, js jetstream.JetStream, w io.Writer) error {
	skipped := 0
	n, err := c.Redrive.Run(ctx, js, func(r republish.Redriven) {
		from := fmt.Sprintf("%s #%d (%s, step %s)", events.DLQStreamName, r.Seq, r.Reason, r.Step)
		switch {
		case r.Skipped != nil:
			skipped++
			fmt.Fprintf(w, "skipped %s #%d: %v\n", events.DLQStreamName, r.Seq, r.Skipped)
		case c.Redrive.DryRun:
			fmt.Fprintf(w, "would re-drive %s to %s\n", from, r.Subject)
		case r.Duplicate:
			fmt.Fprintf(w, "re-drove %s to %s: already published as %s; dead letter deleted\n", from, r.Subject, r.MsgID)
		default:
			fmt.Fprintf(w, "re-drove %s to %s as %s #%d, Nats-Msg-Id %s; dead letter deleted\n", from, r.Subject, events.StreamName, r.NewSeq, r.MsgID)
		}
	})
	verb := "re-drove"
	if c.Redrive.DryRun {
		verb = "dry run: would re-drive"
	}
	fmt.Fprintf(w, "%s %d dead %s", verb, n, plural(n, "letter"))
	if skipped > 0 {
		fmt.Fprintf(w, ", skipped %d that blobref did not write", skipped)
	}
	fmt.Fprintln(w)
	return err
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// config is blobrefctl's configuration: how to reach NATS and Postgres,
// read from the same variables as the services', and the console's
// settings.
type config struct {
	NATS stepservice.NATSConfig
	// DatabaseURL is the services' Postgres, which stuck and console read.
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"`
	// ConsoleAddr is where console listens unless --addr says otherwise.
	ConsoleAddr string `env:"CONSOLE_ADDR" envDefault:"127.0.0.1:8090"`
	// ConsoleTokens and ConsoleTokensFile are the console's bearer tokens
	// (see console.LoadTokens); --tokens-file replaces the file.
	ConsoleTokens     string `env:"CONSOLE_TOKENS"`
	ConsoleTokensFile string `env:"CONSOLE_TOKENS_FILE"`
	// MaxClockSkew is the steps' MAX_CLOCK_SKEW, which retention keeps
	// markers longer by.
	MaxClockSkew time.Duration `env:"MAX_CLOCK_SKEW" envDefault:"5m"`
}

// Validate names each bad setting.
func (c *config) Validate() error {
	var errs []error
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("config: DATABASE_URL: must be set"))
	}
	if _, _, err := net.SplitHostPort(c.ConsoleAddr); err != nil {
		errs = append(errs, fmt.Errorf("config: CONSOLE_ADDR: %q is not host:port", c.ConsoleAddr))
	}
	return errors.Join(errs...)
}

// setup runs `blobrefctl setup`: service.Setup with the configuration in
// the environment, tried again for timeout while NATS is not ready.
func setup(ctx context.Context, timeout time.Duration, stdout, stderr io.Writer) int {
	cfg := service.SetupConfig{}
	cfg.NATS.InboxPrefix = setupInboxPrefix // unless NATS_INBOX_PREFIX says otherwise
	if err := stepservice.Load(&cfg); err != nil {
		fmt.Fprintf(stderr, "blobrefctl: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := stepservice.ConnectNATS(ctx, cfg.NATS, "blobrefctl setup", log)
	if err != nil {
		fmt.Fprintf(stderr, "blobrefctl: setup: %v\n", err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintf(stderr, "blobrefctl: setup: %v\n", err)
		return 1
	}
	var done []string
	err = stepservice.Retry(ctx, log, "setup", func() error {
		done, err = service.Setup(ctx, js, &cfg)
		return err
	})
	for _, line := range done {
		fmt.Fprintln(stdout, line)
	}
	if err != nil {
		fmt.Fprintf(stderr, "blobrefctl: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "set up %d streams, the staging bucket, %d step consumers and ingest's %d read-model consumers\n",
		2, len(service.Consumers), len(events.IngestViewConsumers))
	return 0
}

// setupInboxPrefix is setup's NATS_INBOX_PREFIX by default: the setup
// user of deploy/nats/nats.conf may subscribe to it only.
const setupInboxPrefix = "_INBOX_setup"

// Main runs blobrefctl with args (without the program name) and returns its
// exit status: 0 when the command succeeded, 1 when it failed, 2 for a
// command line or configuration it cannot run.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd, err := Parse(args, time.Now(), stdout)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case len(args) == 0:
		fmt.Fprint(stderr, usage)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "blobrefctl: %v\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		fmt.Fprintf(stderr, "blobrefctl -h lists the commands; blobrefctl <command> -h shows one's flags\n")
		return 2
	case cmd.Name == "version":
		fmt.Fprintln(stdout, buildinfo.Version("blobrefctl"))
		return 0
	case cmd.Name == "setup":
		return setup(ctx, cmd.Timeout, stdout, stderr)
	}
	var cfg config
	if err := stepservice.Load(&cfg); err != nil {
		fmt.Fprintf(stderr, "blobrefctl: %v\n", err)
		return 2
	}
	level := slog.LevelWarn
	var srv *console.Server
	if cmd.Name == "console" {
		level = slog.LevelInfo // who re-drove what
		if srv, err = cmd.Console.server(&cfg); err != nil {
			fmt.Fprintf(stderr, "blobrefctl: console: %v\n", err)
			return 2
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	nc, err := stepservice.ConnectNATS(cctx, cfg.NATS, "blobrefctl", log)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "blobrefctl: %v\n", err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintf(stderr, "blobrefctl: %v\n", err)
		return 1
	}
	switch cmd.Name {
	case "retention":
		err = cmd.retain(ctx, &cfg, js, stdout)
	case "stuck", "console":
		err = withView(ctx, cfg.DatabaseURL, js, func(v *uploadview.View) error {
			if cmd.Name == "stuck" {
				return cmd.stuck(ctx, v, stdout)
			}
			srv.View, srv.JS, srv.Log = v, js, log
			return cmd.Console.serve(ctx, srv, &cfg, stdout)
		})
	default:
		err = cmd.Run(ctx, js, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "blobrefctl: %s: %v\n", cmd.Name, err)
		return 1
	}
	return 0
}

// withView opens a read-only pool on databaseURL and calls fn with a view
// of it and js.
func withView(ctx context.Context, databaseURL string, js jetstream.JetStream, fn func(*uploadview.View) error) error {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	pool, err := uploadview.OpenPool(cctx, databaseURL)
	cancel()
	if err != nil {
		return err
	}
	defer pool.Close()
	return fn(&uploadview.View{Pool: pool, JS: js})
}

// parseFlags parses a command's flags (Main prints the errors): -h writes
// the command's help to help and returns flag.ErrHelp; a flag it does not
// know, a bad value or any argument is an errUsage.
func parseFlags(fs *flag.FlagSet, args []string, spec commandSpec, help io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeHelp(help, spec, fs)
			fmt.Fprint(help, "\n"+connection)
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}
