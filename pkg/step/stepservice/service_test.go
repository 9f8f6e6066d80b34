package stepservice_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime/trace"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testConfig struct {
	stepservice.Config
	stepservice.ConsumerConfig
}

func (c *testConfig) Validate() error {
	return errors.Join(c.Config.Validate(), c.ConsumerConfig.Validate())
}

func TestLoadDefaults(t *testing.T) {
	cfg := &testConfig{Config: stepservice.Config{MetricsAddr: ":9101"}}
	if err := stepservice.Load(cfg); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.NATS.URL != "nats://127.0.0.1:4222" || cfg.MetricsAddr != ":9101" || cfg.Concurrency != 8 || cfg.MaxDeliveries != 20 {
		t.Errorf("defaults: got %+v", cfg)
	}
	if o := cfg.RunnerOptions(); o.Concurrency != 8 || o.AckWait != cfg.AckWait {
		t.Errorf("RunnerOptions: got %+v", o)
	}
	if o := cfg.StreamOptions(); o.MaxBytes != events.DefaultMaxBytes || o.DLQMaxBytes != events.DefaultDLQMaxBytes {
		t.Errorf("StreamOptions: got max bytes %d and %d, want the events defaults", o.MaxBytes, o.DLQMaxBytes)
	}
	t.Setenv("STREAM_MAX_BYTES", "-1")
	t.Setenv("DLQ_MAX_BYTES", "1048576")
	if err := stepservice.Load(cfg); err != nil {
		t.Fatal(err)
	}
	if o := cfg.StreamOptions(); o.MaxBytes != -1 || o.DLQMaxBytes != 1<<20 {
		t.Errorf("StreamOptions: got max bytes %d and %d, want -1 and 1 MiB", o.MaxBytes, o.DLQMaxBytes)
	}
}

func TestLoadNamesTheBadSetting(t *testing.T) {
	for name, value := range map[string]string{
		"CONSUMER_CONCURRENCY":               "0",
		"CONSUMER_ACK_WAIT":                  "10ms",
		"LOG_LEVEL":                          "loud",
		"METRICS_ADDR":                       "nonsense",
		"STREAM_REPLICAS":                    "7",
		"BLOBREF_FAILPOINTS":                 "x=explode",
		"NATS_CERT":                          "/tmp/cert.pem",
		"SHUTDOWN_TIMEOUT":                   "soon",
		"STREAM_MAX_BYTES":                   "0",
		"DLQ_MAX_BYTES":                      "-2",
		"OTEL_TRACES_EXPORTER":               "zipkin",
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "http/json",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp",
		"OTEL_SDK_DISABLED":                  "maybe",
		"GC_MIN_HEAP":                        "1048576",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, value)
			err := stepservice.Load(&testConfig{})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("Load with %s=%q: got %v, want an error naming %s", name, value, err, name)
			}
		})
	}
}

func TestOpsEndpoints(t *testing.T) {
	t.Parallel()
	ready := make(chan struct{})
	down := errors.New("down")
	var dbErr error
	var depsDown []string
	ops := &stepservice.Ops{
		Registry: stepservice.NewRegistry(),
		Ready:    ready,
		Checks: map[string]stepservice.Check{
			"postgres": func(context.Context) error { return dbErr },
		},
		Down: func() []string { return depsDown },
	}
	srv := httptest.NewServer(ops.Handler())
	defer srv.Close()
	get := func(path string) (int, map[string]string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			_ = json.NewDecoder(resp.Body).Decode(&body)
		}
		return resp.StatusCode, body
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200", code)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body["startup"] != "starting" {
		t.Errorf("/readyz before start: got %d %v, want 503 starting", code, body)
	}
	close(ready)
	if code, body := get("/readyz"); code != http.StatusOK || body["postgres"] != "ok" {
		t.Errorf("/readyz: got %d %v, want 200", code, body)
	}
	dbErr = down
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body["postgres"] != "unavailable" {
		t.Errorf("/readyz with postgres down: got %d %v, want 503 naming postgres", code, body)
	}
	dbErr, depsDown = nil, []string{"bucket"}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body["bucket"] != "down" || body["postgres"] != "ok" {
		t.Errorf("/readyz with the bucket down: got %d %v, want 503 naming the bucket", code, body)
	}
	if code, _ := get("/metrics"); code != http.StatusOK {
		t.Errorf("/metrics: got %d, want 200", code)
	}
}

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
			err := stepservice.Load(&testConfig{})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("Load with %v: got %v, want an error naming %s", env, err, name)
			}
		})
	}
	t.Run("without NATS_USER", func(t *testing.T) {
		t.Setenv("NATS_PASSWORD_FILE", pwFile)
		if err := stepservice.Load(&testConfig{}); err == nil || !strings.Contains(err.Error(), "NATS_USER") {
			t.Errorf("Load with NATS_PASSWORD_FILE alone: got %v, want an error naming NATS_USER", err)
		}
	})
	cfg := &testConfig{}
	if err := stepservice.Load(cfg); err != nil || cfg.NATSSetup != stepservice.SetupAuto {
		t.Errorf("NATS_SETUP by default: got %q, %v, want %q", cfg.NATSSetup, err, stepservice.SetupAuto)
	}
}

func TestDefaultInboxPrefix(t *testing.T) {
	for name, want := range map[string]string{"ingest": "_INBOX_ingest", "blobrefctl setup": "_INBOX_blobrefctl_setup", "a.b>*": "_INBOX_a_b__"} {
		if got := stepservice.DefaultInboxPrefix(name); got != want {
			t.Errorf("DefaultInboxPrefix(%q): got %q, want %q", name, got, want)
		}
	}
}

// The environment's defaults are the runtime's: a config loaded from an
// empty environment gives the runner exactly step.DefaultOptions, and the
// streams package events' defaults.
func TestDefaultsAreTheRuntimes(t *testing.T) {
	cfg := &testConfig{}
	if err := stepservice.Load(cfg); err != nil {
		t.Fatal(err)
	}
	got, want := cfg.RunnerOptions(), step.DefaultOptions()
	want.ShutdownGrace, want.ProbeInterval, want.ProbeMaxInterval, want.ProbeTimeout, want.FetchWait = 0, 0, 0, 0, 0
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("RunnerOptions from an empty environment:\n got %+v\nwant %+v", got, want)
	}
	if o := cfg.StreamOptions(); o.Replicas != 1 || o.MaxAge != events.DefaultMaxAge || o.DLQMaxAge != events.DefaultDLQMaxAge {
		t.Errorf("StreamOptions from an empty environment: got %+v, want the events defaults", o)
	}
	if g := stepservice.ShutdownGrace(cfg.ShutdownTimeout); g != step.DefaultOptions().ShutdownGrace {
		t.Errorf("ShutdownGrace of the default SHUTDOWN_TIMEOUT (%s): got %s, want the runtime's %s", cfg.ShutdownTimeout, g, step.DefaultOptions().ShutdownGrace)
	}
	for timeout, want := range map[time.Duration]time.Duration{25 * time.Second: 20 * time.Second, 10 * time.Second: 5 * time.Second, 2 * time.Second: time.Second} {
		if got := stepservice.ShutdownGrace(timeout); got != want {
			t.Errorf("ShutdownGrace(%s): got %s, want %s", timeout, got, want)
		}
	}
	t.Setenv("CONSUMER_BATCH_SIZE", "16")
	t.Setenv("SHUTDOWN_TIMEOUT", "10s")
	cfg = &testConfig{ConsumerConfig: stepservice.ConsumerConfig{Concurrency: 3}}
	if err := stepservice.Load(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.BatchSize != 16 || cfg.Concurrency != 3 || cfg.MaxInFlight != 256 || cfg.ShutdownTimeout != 10*time.Second {
		t.Errorf("Load: got %+v, want the environment's batch size, the service's concurrency and the default window", cfg)
	}
}

// A profile or trace being taken when the service stops ends with what it
// has: the ops server shuts down within its grace and Run returns no error.
func TestOpsStopsDuringATrace(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ops := &stepservice.Ops{Addr: addr, Registry: stepservice.NewRegistry(), Pprof: true}
	ran := make(chan error, 1)
	go func() { ran <- ops.Run(ctx) }()

	got := make(chan int, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + "/debug/pprof/trace?seconds=60")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				got <- resp.StatusCode
				return
			}
			if time.Now().After(deadline) {
				got <- 0
				return
			}
			time.Sleep(10 * time.Millisecond) // the server is still starting
		}
	}()
	// The trace runs in this process.
	deadline := time.Now().Add(10 * time.Second)
	for !trace.IsEnabled() {
		if time.Now().After(deadline) {
			t.Fatal("the trace request did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run during a trace: got %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context ending, during a 60s trace")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Run took %v to stop during a trace, want well within its 5s grace", d)
	}
	if code := <-got; code != http.StatusOK {
		t.Errorf("the trace request: got %d, want 200 with what it had", code)
	}
}
