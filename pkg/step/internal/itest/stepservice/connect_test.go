package stepservice_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A service's connection gets its replies on its own inbox prefix, and
// authenticates with the password in NATS_PASSWORD_FILE, read again when it
// reconnects: here against a server whose user may subscribe to nothing
// but that prefix, and whose password changes while the service is away.
func TestConnectNATSOwnInboxAndPasswordFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf, pwFile := filepath.Join(dir, "nats.conf"), filepath.Join(dir, "password")
	writeConf := func(password string) {
		t.Helper()
		c := `jetstream { store_dir: "` + filepath.Join(dir, "store") + `" }
accounts { A { jetstream: enabled, users: [
  {user: svc, password: ` + password + `, permissions: {publish: ["$JS.API.>"], subscribe: ["_INBOX_svc.>"]}}
] } }
`
		if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("first0password")
	srv, err := natsproc.Start(natsproc.Config{ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	nc, err := stepservice.ConnectNATS(ctx, stepservice.NATSConfig{URL: srv.URL(), User: "svc", PasswordFile: pwFile}, "svc", testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A JetStream request: its answer comes to the inbox, which the server
	// delivers only on _INBOX_svc.
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("account info through _INBOX_svc: %v", err)
	}

	writeConf("second0password")
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(30 * time.Second); err != nil {
		t.Fatalf("after the password changed: %v", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("account info after reconnecting with the new password: %v", err)
	}
}

// A service's Postgres connections keep one generic plan per prepared
// statement, unless DATABASE_URL says otherwise.
func TestPoolPlanCacheMode(t *testing.T) {
	t.Parallel()
	_, url := testenv.NewSchema(t, "plans_")
	for _, tc := range []struct{ url, want string }{
		{url, "force_generic_plan"},
		{url + "&plan_cache_mode=auto", "auto"},
	} {
		pool, err := stepservice.NewPool(context.Background(), tc.url, 2)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		err = pool.QueryRow(context.Background(), "SHOW plan_cache_mode").Scan(&got)
		pool.Close()
		if err != nil || got != tc.want {
			t.Errorf("%s: plan_cache_mode %q (%v), want %q", tc.url, got, err, tc.want)
		}
	}
}

// OpenPostgres warns when the server's autovacuum is off, and only then.
func TestOpenPostgresWarnsWithoutAutovacuum(t *testing.T) {
	t.Parallel()
	_, url := testenv.NewSchema(t, "autovac_")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	pool, err := stepservice.OpenPostgres(context.Background(), url, 2, func(context.Context, *pgxpool.Pool) error { return nil }, log)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var on string
	if err := pool.QueryRow(context.Background(), "SHOW autovacuum").Scan(&on); err != nil {
		t.Fatal(err)
	}
	if warned := strings.Contains(logs.String(), "autovacuum is off"); warned != (on != "on") {
		t.Errorf("autovacuum %s: warned %v, want a warning only when it is off; logged:\n%s", on, warned, logs.String())
	}
}

// SetUpStreams on a server whose file store is smaller than the streams'
// reservation keeps retrying, and its warnings say which settings to
// change; with a store large enough the same call succeeds.
func TestSetUpStreamsNamesTheStoreTooSmall(t *testing.T) {
	t.Parallel()
	_, js := testenv.StartNATSConf(t, "jetstream {\n  max_file_store: 1GB\n}\n").ConnectBare()
	logs := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	// UPLOADS (1 GiB) and UPLOADS_DLQ (256 MiB) by default: more than 1 GB.
	if err := stepservice.SetUpStreams(ctx, js, stepservice.SetupAuto, events.StreamOptions{}, log); err == nil {
		t.Fatal("SetUpStreams succeeded on a 1 GB store")
	}
	for _, want := range []string{"insufficient storage resources", "hint=", "max_file_store", "STREAM_MAX_BYTES", "STAGING_MAX_BYTES"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the warnings lack %q; logged:\n%s", want, logs.String())
		}
	}

	ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	fits := events.StreamOptions{MaxBytes: 512 << 20, DLQMaxBytes: 64 << 20}
	if err := stepservice.SetUpStreams(ctx, js, stepservice.SetupAuto, fits, log); err != nil {
		t.Fatalf("SetUpStreams with streams that fit: %v", err)
	}
}
