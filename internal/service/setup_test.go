package service_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/internal/steprun"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

func TestLoadNamesTheBadNATSSetting(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "pw")
	for name, env := range map[string]map[string]string{
		"NATS_SETUP":         {"NATS_SETUP": "sometimes"},
		"NATS_INBOX_PREFIX":  {"NATS_INBOX_PREFIX": "_INBOX.>"},
		"NATS_PASSWORD_FILE": {"NATS_PASSWORD_FILE": pwFile, "NATS_USER": "u", "NATS_PASSWORD": "p"},
	} {
		t.Run(name, func(t *testing.T) {
			for k, v := range env {
				t.Setenv(k, v)
			}
			err := service.Load(&testConfig{})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("Load with %v: got %v, want an error naming %s", env, err, name)
			}
		})
	}
	t.Run("without NATS_USER", func(t *testing.T) {
		t.Setenv("NATS_PASSWORD_FILE", pwFile)
		if err := service.Load(&testConfig{}); err == nil || !strings.Contains(err.Error(), "NATS_USER") {
			t.Errorf("Load with NATS_PASSWORD_FILE alone: got %v, want an error naming NATS_USER", err)
		}
	})
	cfg := &testConfig{}
	if err := service.Load(cfg); err != nil || cfg.NATSSetup != service.SetupAuto {
		t.Errorf("NATS_SETUP by default: got %q, %v, want %q", cfg.NATSSetup, err, service.SetupAuto)
	}
}

func TestDefaultInboxPrefix(t *testing.T) {
	for name, want := range map[string]string{"ingest": "_INBOX_ingest", "blobrefctl setup": "_INBOX_blobrefctl_setup", "a.b>*": "_INBOX_a_b__"} {
		if got := service.DefaultInboxPrefix(name); got != want {
			t.Errorf("DefaultInboxPrefix(%q): got %q, want %q", name, got, want)
		}
	}
}

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
	nc, err := service.ConnectNATS(ctx, service.NATSConfig{URL: srv.URL(), User: "svc", PasswordFile: pwFile}, "svc", testenv.Logger(t))
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

// Setup creates what services with NATS_SETUP=off wait for: SetUpStreams
// returns once the streams exist, and Setup's durable consumers are the
// ones the step runners look up.
func TestSetupIsWhatServicesLookUp(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	nc, err := service.ConnectNATS(t.Context(), service.NATSConfig{URL: n.URL()}, "setup-test", testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	waited := make(chan error, 1)
	go func() {
		waited <- service.SetUpStreams(ctx, js, service.SetupOff, events.StreamOptions{}, testenv.Logger(t))
	}()
	if _, err := js.Stream(ctx, events.StreamName); err == nil {
		t.Fatal("UPLOADS exists before setup: SetUpStreams with NATS_SETUP=off created it")
	}

	cfg := &service.SetupConfig{}
	if err := service.Load(cfg); err != nil {
		t.Fatal(err)
	}
	cfg.AckWait, cfg.StagingTTL = 45*time.Second, 12*time.Hour
	for range 2 { // and again, as every later run does
		done, err := service.Setup(ctx, js, cfg)
		if err != nil {
			t.Fatalf("Setup: %v (did %q)", err, done)
		}
		if len(done) != 5 {
			t.Errorf("Setup: got %q, want a line for each of 2 streams, the bucket and 2 consumers", done)
		}
	}
	if err := <-waited; err != nil {
		t.Fatalf("SetUpStreams with NATS_SETUP=off: %v", err)
	}

	store, err := js.ObjectStore(ctx, cfg.StagingBucket)
	if err != nil {
		t.Fatalf("staging bucket: %v", err)
	}
	if st, err := store.Status(ctx); err != nil || st.TTL() != 12*time.Hour {
		t.Errorf("staging bucket: got %v, %v, want TTL 12h", st, err)
	}
	for _, spec := range service.Consumers {
		want := steprun.DurableConfig(spec, cfg.RunnerOptions())
		c, err := js.Consumer(ctx, events.StreamName, spec.Durable)
		if err != nil {
			t.Fatalf("consumer %s: %v", spec.Durable, err)
		}
		got := c.CachedInfo().Config
		if got.FilterSubject != want.FilterSubject || got.AckWait != 45*time.Second || got.MaxAckPending != want.MaxAckPending ||
			got.MaxDeliver != want.MaxDeliver || got.AckPolicy != want.AckPolicy {
			t.Errorf("consumer %s: got %+v, want %+v", spec.Durable, got, want)
		}
	}
}
