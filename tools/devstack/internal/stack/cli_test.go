//go:build unix

package stack

import (
	"context"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// runMain runs devstack's command line with env as its whole environment
// and returns its exit status and output; it fails the test if Main does
// not return within a minute.
func runMain(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut testenv.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- Main(ctx, args, env, &out, &errOut) }()
	select {
	case code = <-done:
	case <-time.After(time.Minute):
		cancel()
		<-done
		t.Fatalf("devstack %s did not exit within a minute:\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	}
	return code, out.String(), errOut.String()
}

// -h prints the usage on stdout and exits 0, without starting anything.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}} {
		code, stdout, stderr := runMain(t, nil, args...)
		if code != 0 || stderr != "" {
			t.Errorf("devstack %s: exit %d, stderr %q; want 0 and nothing on stderr", args[0], code, stderr)
		}
		for _, want := range []string{"Usage:\n  devstack ", "devstack reset", "DATABASE_URL", "DEVSTACK_DATA_DIR", "DEVSTACK_NATS_PORT", "DEVSTACK_BIN_DIR", "PG_BINDIR", "blobref_dev"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("devstack %s: the usage lacks %q:\n%s", args[0], want, stdout)
			}
		}
	}
	for _, args := range [][]string{{"--bogus"}, {"start", "now"}} {
		code, stdout, stderr := runMain(t, nil, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "devstack -h shows the usage") {
			t.Errorf("devstack %q: exit %d, stdout %q, stderr %q; want 2 and the reason on stderr", args, code, stdout, stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runMain(t, nil, "--version")
	if code != 0 || !regexp.MustCompile(`^devstack \S+, .*go1\.`).MatchString(stdout) {
		t.Errorf("devstack --version: exit %d, stdout %q, stderr %q; want 0 and its version", code, stdout, stderr)
	}
}

// A DATABASE_URL devstack cannot use stops it at once, with the reason,
// before it starts anything.
func TestBadDatabaseURL(t *testing.T) {
	t.Parallel()
	schema, err := url.Parse(freshSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	missing := *schema
	missing.Path, missing.RawQuery = "/devstack_no_such_database", "sslmode=disable"
	for _, tc := range []struct {
		name, url, want string
	}{
		{"nothing listens", "postgres://postgres@" + testenv.FreeAddr(t) + "/blobref?sslmode=disable", "connect"},
		{"no such database", missing.String(), `database "devstack_no_such_database" does not exist`},
		{"not a URL", "postgres://postgres@127.0.0.1:5432/x?sslmode=bogus", "sslmode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := []string{
				"PATH=/usr/bin:/bin", "DATABASE_URL=" + tc.url, "DEVSTACK_NATS_PORT=0",
				"DEVSTACK_DATA_DIR=" + t.TempDir(), "DEVSTACK_BIN_DIR=" + fakeBin(t, graceful, graceful),
			}
			code, stdout, stderr := runMain(t, env)
			if code != 1 || !strings.Contains(stderr, "devstack: DATABASE_URL "+redact(tc.url)) || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 1 and DATABASE_URL's problem (%q)", code, stderr, tc.want)
			}
			if strings.Contains(stdout, "started") || strings.Contains(stdout, "NATS with JetStream") {
				t.Errorf("devstack started something with a bad DATABASE_URL:\n%s", stdout)
			}
		})
	}
}

// devstack reset on a data directory in use refuses; with DATABASE_URL set,
// it refuses too and removes nothing.
func TestResetRefuses(t *testing.T) {
	t.Parallel()
	out := &testenv.SyncBuffer{}
	cfg := fakeConfig(t, fakeBin(t, graceful, graceful), out)
	r := runStack(t, cfg)
	r.waitReady(t, 30*time.Second)
	waitOutput(t, out, "blobwriter | started", "refwriter  | started")
	cfg.DatabaseURL = ""
	cfg.PostgresAddr, cfg.Database = DefaultPostgresAddr, DefaultDatabase
	if err := Reset(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "another devstack (pid") {
		t.Errorf("Reset while the stack runs: got %v, want another devstack is using it", err)
	}

	env := []string{"DATABASE_URL=postgres://postgres@127.0.0.1:5432/mine", "DEVSTACK_DATA_DIR=" + t.TempDir()}
	code, _, stderr := runMain(t, env, "reset")
	if code != 1 || !strings.Contains(stderr, "DATABASE_URL is set") {
		t.Errorf("reset with DATABASE_URL: exit %d, stderr %q; want 1 and why", code, stderr)
	}
}
