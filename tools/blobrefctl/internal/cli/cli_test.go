package cli_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/blobrefctl/internal/cli"
	"github.com/blobref/blobref/tools/blobrefctl/internal/pipelinetest"
	"github.com/blobref/blobref/tools/blobrefctl/internal/republish"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pipelinetest.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestParse(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		args []string
		want cli.Command
	}{
		{
			[]string{"replay", "--since", "2025-06-01T10:00:00Z", "--subject", "uploads.requested.>"},
			cli.Command{Name: "replay", Replay: republish.Replay{Selection: republish.Selection{Subject: "uploads.requested.>", Since: at("2025-06-01T10:00:00Z")}}},
		},
		{
			[]string{"replay", "-since=90m", "-until=2025-06-01T11:59:00.5+00:00", "-subject=uploads.>", "-dry-run"},
			cli.Command{Name: "replay", Replay: republish.Replay{DryRun: true, Selection: republish.Selection{
				Subject: "uploads.>", Since: now.Add(-90 * time.Minute), Until: at("2025-06-01T11:59:00.5Z")}}},
		},
		{
			[]string{"replay", "--last", "--subject", "uploads.requested.abc"},
			cli.Command{Name: "replay", Replay: republish.Replay{Selection: republish.Selection{Subject: "uploads.requested.abc", Last: true}}},
		},
		{
			[]string{"dlq", "list"},
			cli.Command{Name: "dlq list"},
		},
		{
			[]string{"dlq", "list", "--reason", "conflict", "--subject", "uploads.requested.>"},
			cli.Command{Name: "dlq list", Redrive: republish.Redrive{DeadLetterFilter: uploadview.DeadLetterFilter{Reason: "conflict", Subject: "uploads.requested.>"}}},
		},
		{
			[]string{"dlq", "redrive", "--reason", "claim_missing", "--dry-run"},
			cli.Command{Name: "dlq redrive", Redrive: republish.Redrive{DryRun: true, DeadLetterFilter: uploadview.DeadLetterFilter{Reason: "claim_missing"}}},
		},
		{
			[]string{"dlq", "redrive", "--seq", "42"},
			cli.Command{Name: "dlq redrive", Redrive: republish.Redrive{DeadLetterFilter: uploadview.DeadLetterFilter{Seq: 42}}},
		},
		{
			[]string{"stuck"},
			cli.Command{Name: "stuck", Stuck: uploadview.StuckQuery{OlderThan: 5 * time.Minute, Limit: 100}},
		},
		{
			[]string{"stuck", "--older-than", "0s", "--limit=7", "--json"},
			cli.Command{Name: "stuck", Stuck: uploadview.StuckQuery{Limit: 7}, JSON: true},
		},
		{
			[]string{"console"},
			cli.Command{Name: "console"},
		},
		{
			[]string{"console", "--addr", ":0", "--tokens-file", "/etc/blobref/console-tokens"},
			cli.Command{Name: "console", Console: cli.ConsoleFlags{Addr: ":0", TokensFile: "/etc/blobref/console-tokens"}},
		},
	} {
		got, err := cli.Parse(tc.args, now, io.Discard)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.args, err)
			continue
		}
		if !equal(got, tc.want) {
			t.Errorf("Parse(%q):\n got %+v\nwant %+v", tc.args, got, tc.want)
		}
	}
}

func equal(a, b cli.Command) bool {
	sa, sb := a.Replay.Selection, b.Replay.Selection
	return a.Name == b.Name && a.Replay.DryRun == b.Replay.DryRun && a.Redrive == b.Redrive &&
		a.Stuck == b.Stuck && a.JSON == b.JSON && a.Console == b.Console &&
		sa.Subject == sb.Subject && sa.Last == sb.Last && sa.Since.Equal(sb.Since) && sa.Until.Equal(sb.Until)
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{nil, "no command"},
		{[]string{"purge"}, `unknown command "purge"`},
		{[]string{"dlq"}, "dlq takes list or redrive"},
		{[]string{"replay", "--since", "1h"}, "--subject is required"},
		{[]string{"replay", "--subject", "uploads.>"}, "give --since"},
		{[]string{"replay", "--subject", "dlq.uploads.>", "--since", "1h"}, "not a subject of UPLOADS"},
		{[]string{"replay", "--subject", "uploads.>", "--since", "1h", "--last"}, "exclude each other"},
		{[]string{"replay", "--subject", "uploads.>", "--last", "--until", "1h"}, "--until goes with --since"},
		{[]string{"replay", "--subject", "uploads.>", "--since", "yesterday"}, "--since: \"yesterday\" is neither"},
		{[]string{"replay", "--subject", "uploads.>", "--since", "-1h"}, "--since"},
		{[]string{"replay", "--subject", "uploads.>", "--since", "1h", "--until", "2h"}, "is not before"},
		{[]string{"replay", "--subject", "uploads.>", "--last", "extra"}, `unexpected argument "extra"`},
		{[]string{"replay", "--reason", "conflict"}, "flag provided but not defined"},
		{[]string{"dlq", "list", "--dry-run"}, "flag provided but not defined"},
		{[]string{"dlq", "redrive", "--reason", "conflicts"}, `--reason: "conflicts" is not one of`},
		{[]string{"dlq", "redrive", "--subject", "orders.>"}, "not a subject of UPLOADS"},
		{[]string{"dlq", "redrive", "--seq", "-1"}, "invalid value"},
		{[]string{"stuck", "--older-than", "-1m"}, "--older-than: must not be negative"},
		{[]string{"stuck", "--limit", "0"}, "--limit: must be at least 1"},
		{[]string{"stuck", "extra"}, `unexpected argument "extra"`},
		{[]string{"console", "--addr", "8090"}, `--addr: "8090" is not host:port`},
		{[]string{"console", "--reason", "x"}, "flag provided but not defined"},
	} {
		_, err := cli.Parse(tc.args, time.Now(), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): got %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// Help goes to stdout with exit 0: blobrefctl's own for -h, help and a
// bare --help; each command's, with its flags, after the command.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string // in stdout
		not  []string // not in stdout
	}{
		{[]string{"-h"}, []string{"Usage:\n  blobrefctl replay", "blobrefctl dlq redrive", "NATS_URL"}, []string{"Flags"}},
		{[]string{"--help"}, []string{"blobrefctl dlq list [--reason R]"}, nil},
		{[]string{"help"}, []string{"Commands:"}, nil},
		{[]string{"replay", "-h"}, []string{"Usage: blobrefctl replay --subject S", "-since string", "-last", "-dry-run", "NATS_URL"}, []string{"dlq", "-reason"}},
		{[]string{"replay", "--subject", "uploads.>", "--help"}, []string{"Usage: blobrefctl replay"}, nil},
		{[]string{"help", "replay"}, []string{"Usage: blobrefctl replay", "-until string"}, nil},
		{[]string{"dlq", "list", "-h"}, []string{"Usage: blobrefctl dlq list", "-reason string", "claim_missing"}, []string{"-dry-run", "-since", "redrive"}},
		{[]string{"dlq", "redrive", "--help"}, []string{"Usage: blobrefctl dlq redrive", "-reason string", "-dry-run"}, []string{"-since"}},
		{[]string{"help", "dlq", "redrive"}, []string{"Usage: blobrefctl dlq redrive", "-dry-run"}, nil},
		{[]string{"dlq", "-h"}, []string{"Usage: blobrefctl dlq list", "Usage: blobrefctl dlq redrive"}, []string{"replay"}},
		{[]string{"stuck", "-h"}, []string{"Usage: blobrefctl stuck", "not_referenced", "-older-than duration", "-json", "DATABASE_URL"}, []string{"-dry-run", "-addr"}},
		{[]string{"help", "console"}, []string{"Usage: blobrefctl console", "-tokens-file string", "CONSOLE_TOKENS", "operate", "DATABASE_URL"}, []string{"-older-than"}},
		{[]string{"-h"}, []string{"blobrefctl stuck [--older-than D]", "blobrefctl console [--addr A]", "blobrefctl retention [--margin D] [--dry-run]"}, nil},
		{[]string{"retention", "-h"}, []string{"Usage: blobrefctl retention", "-margin duration", "-dry-run", "expired", "MAX_CLOCK_SKEW", "DATABASE_URL"}, []string{"-older-than", "-reason"}},
	} {
		var stdout, stderr bytes.Buffer
		code := cli.Main(context.Background(), tc.args, &stdout, &stderr)
		if code != 0 || stderr.Len() > 0 {
			t.Errorf("blobrefctl %s: exit %d, stderr %q; want 0 and nothing on stderr", strings.Join(tc.args, " "), code, stderr.String())
		}
		for _, want := range tc.want {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("blobrefctl %s: stdout lacks %q:\n%s", strings.Join(tc.args, " "), want, stdout.String())
			}
		}
		for _, not := range tc.not {
			if strings.Contains(stdout.String(), not) {
				t.Errorf("blobrefctl %s: stdout has %q, another command's:\n%s", strings.Join(tc.args, " "), not, stdout.String())
			}
		}
	}
	if _, err := cli.Parse([]string{"replay", "-h"}, time.Now(), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Parse(replay -h): got %v, want flag.ErrHelp", err)
	}

	// No command, or a bad one: the reason on stderr, exit 2, nothing on stdout.
	for _, args := range [][]string{nil, {"replay", "--bogus"}, {"help", "purge"}, {"retention", "--margin", "1h"}, {"retention", "now"}} {
		var stdout, stderr bytes.Buffer
		if code := cli.Main(context.Background(), args, &stdout, &stderr); code != 2 || stdout.Len() > 0 || stderr.Len() == 0 {
			t.Errorf("blobrefctl %q: exit %d, stdout %q, stderr %q; want 2, the reason on stderr only", args, code, stdout.String(), stderr.String())
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--version", "-version", "version"} {
		var stdout, stderr bytes.Buffer
		code := cli.Main(context.Background(), []string{arg}, &stdout, &stderr)
		if code != 0 || !regexp.MustCompile(`^blobrefctl \S+, .*go1\.`).MatchString(stdout.String()) {
			t.Errorf("blobrefctl %s: exit %d, stdout %q, stderr %q; want 0 and blobrefctl's version", arg, code, stdout.String(), stderr.String())
		}
	}
}

// Main, as the binary runs it: configuration from the environment, each
// command against a real JetStream server, and its exit status.
func TestMainRunsEachCommand(t *testing.T) {
	// No t.Parallel: t.Setenv.
	nsrv := testenv.StartNATS(t)
	_, js := nsrv.Connect()
	t.Setenv("NATS_URL", nsrv.URL())
	ctx := context.Background()

	ev, err := events.NewRequested(events.Request{ID: "abc", Source: "/test", Subject: "users/1", ContentType: "text/plain", Data: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := ev.Msg("abc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	dead := events.DeadLetterMsg(events.DeadLetter{Reason: events.ReasonClaimMissing, Step: "blob", Subject: msg.Subject, Deliveries: 1}, msg.Header, msg.Data, "")
	if _, err := js.PublishMsg(ctx, dead); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := cli.Main(ctx, args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	for _, tc := range []struct {
		args []string
		code int
		out  string // a regexp the output matches
	}{
		{[]string{"replay", "--last", "--subject", "uploads.requested.abc", "--dry-run"}, 0,
			`(?m)^would replay uploads\.requested\.abc \(UPLOADS #1, stored .*\)\ndry run: would replay 1 event\n$`},
		{[]string{"replay", "--last", "--subject", "uploads.requested.abc"}, 0,
			`(?m)^replayed uploads\.requested\.abc \(UPLOADS #1, stored .*\) as UPLOADS #2, Nats-Msg-Id replay-[0-9a-f]{8}/UPLOADS/1\nreplayed 1 event\n$`},
		{[]string{"dlq", "list", "--reason", "conflict"}, 0, `(?m)^SEQ +DEAD AT +REASON.*\n0 dead letters\n$`},
		{[]string{"dlq", "list"}, 0, `(?m)^1 +\S+ +claim_missing +blob +1 +uploads\.requested\.abc +\n1 dead letter\n$`},
		{[]string{"dlq", "redrive", "--dry-run"}, 0,
			`(?m)^would re-drive UPLOADS_DLQ #1 \(claim_missing, step blob\) to uploads\.requested\.abc\ndry run: would re-drive 1 dead letter\n$`},
		{[]string{"dlq", "redrive", "--subject", "uploads.requested.abc"}, 0,
			`(?m)^re-drove UPLOADS_DLQ #1 \(claim_missing, step blob\) to uploads\.requested\.abc as UPLOADS #3, Nats-Msg-Id redrive/UPLOADS_DLQ/1; dead letter deleted\nre-drove 1 dead letter\n$`},
		{[]string{"dlq", "list"}, 0, `(?m)^0 dead letters\n$`},
	} {
		code, out, errOut := run(tc.args...)
		if code != tc.code || !regexp.MustCompile(tc.out).MatchString(out) {
			t.Errorf("blobrefctl %s: exit %d, output\n%s%s\nwant exit %d and output matching %s", strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.out)
		}
	}

	if code, _, errOut := run("replay"); code != 2 || !strings.Contains(errOut, "blobrefctl: --subject is required") {
		t.Errorf("bad command line: exit %d, %q; want 2 and the reason", code, errOut)
	}
	t.Setenv("NATS_CERT", "/nonexistent.pem")
	if code, _, errOut := run("dlq", "list"); code != 2 || !strings.Contains(errOut, "NATS_CERT") {
		t.Errorf("bad configuration: exit %d, %q; want 2 and the setting", code, errOut)
	}
	t.Setenv("NATS_CERT", "")
	if err := js.DeleteStream(ctx, events.DLQStreamName); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run("dlq", "list"); code != 1 || !strings.Contains(errOut, "blobrefctl: dlq list: stream UPLOADS_DLQ") {
		t.Errorf("missing stream: exit %d, %q; want 1 and the cause", code, errOut)
	}
}
