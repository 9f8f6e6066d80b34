package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/step/stepservice"
	"github.com/blobref/blobref/services/ingest/internal/auth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testToken is a token strong enough to start with.
const testToken = "Zq3vX9pL2mN8rT4wY6bC1dF5gH7jK0sA"

func TestLoadDefaults(t *testing.T) {
	t.Setenv("AUTH_TOKENS", testToken+"=alice")
	cfg := defaults()
	if err := stepservice.Load(cfg); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.HTTPAddr != ":8080" || cfg.MetricsAddr != ":9100" || cfg.GCMinHeap != 24<<20 || cfg.MaxUploadSize != 1<<30 || cfg.InlineThreshold != 512<<10 ||
		cfg.StagingBucket != "uploads-staging" || cfg.StagingTTL != 72*time.Hour ||
		cfg.StagingMaxBytes != service.DefaultStagingMaxBytes || cfg.WaitMax != 30*time.Second ||
		cfg.RedriveAfter != 30*time.Second || !slices.Contains(cfg.AllowedContentTypes, "image/*") ||
		cfg.ReadHeaderTimeout != 10*time.Second || cfg.BodyReadTimeout != 30*time.Second || cfg.BodyMinRate != 1<<10 ||
		cfg.DatabaseAcquireTimeout != 2*time.Second || cfg.CallerMaxConcurrent != 64 || cfg.CallerRate != 200 ||
		cfg.CallerBurst != 400 || cfg.CallerMaxStagedBytes != 2<<30 || cfg.CallerStagedHold != 15*time.Minute ||
		cfg.CompleterInterval != 30*time.Second || cfg.CompleterHorizon != 15*time.Minute {
		t.Errorf("defaults: got %+v", cfg)
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]byteSize{"100": 100, "1KiB": 1024, "5 GiB": 5 << 30, "2MB": 2e6, "7B": 7} {
		var got byteSize
		if err := got.UnmarshalText([]byte(in)); err != nil || got != want {
			t.Errorf("%q: got %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "lots", "99999999999GiB"} {
		var got byteSize
		if err := got.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: got %d, want an error", in, got)
		}
	}
}

func TestLoadNamesTheBadSetting(t *testing.T) {
	for name, value := range map[string]string{
		"HTTP_ADDR":                "8080",
		"AUTH_TOKENS":              testToken + "=alice:admin",
		"AUTH_TOKENS_FILE":         "/nonexistent/tokens",
		"MAX_UPLOAD_SIZE":          "0",
		"INLINE_THRESHOLD":         "1MiB",
		"ALLOWED_CONTENT_TYPES":    "images",
		"STAGING_BUCKET":           "uploads.staging",
		"STAGING_TTL":              "0s",
		"STAGING_MAX_BYTES":        "0",
		"WAIT_MAX":                 "-1s",
		"REDRIVE_AFTER":            "0s",
		"HTTP_READ_HEADER_TIMEOUT": "0s",
		"BODY_READ_TIMEOUT":        "-1s",
		"BODY_MIN_RATE":            "slow",
		"DATABASE_ACQUIRE_TIMEOUT": "-1s",
		"CALLER_MAX_CONCURRENT":    "-1",
		"CALLER_RATE":              "-5",
		"CALLER_BURST":             "0",
		"CALLER_MAX_STAGED_BYTES":  "1MiB",
		"CALLER_STAGED_HOLD":       "0s",
		"COMPLETER_INTERVAL":       "0s",
		"COMPLETER_HORIZON":        "10s",
	} {
		t.Run(name, func(t *testing.T) {
			if name != "AUTH_TOKENS" {
				t.Setenv("AUTH_TOKENS", testToken+"=alice")
			}
			t.Setenv(name, value)
			err := stepservice.Load(&config{})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("Load with %s=%q: got %v, want an error naming %s", name, value, err, name)
			}
		})
	}
	// A weak token is refused without repeating it, unless allowed.
	for _, weak := range []string{"t0ken", "CHANGE-ME", "dev-token"} {
		t.Run("weak "+weak, func(t *testing.T) {
			t.Setenv("AUTH_TOKENS", weak+"=alice")
			err := stepservice.Load(&config{})
			if err == nil || !strings.Contains(err.Error(), "AUTH_TOKENS") || !strings.Contains(err.Error(), "AUTH_ALLOW_WEAK_TOKENS") {
				t.Errorf("Load with a weak token: got %v, want an error naming AUTH_TOKENS and AUTH_ALLOW_WEAK_TOKENS", err)
			}
			if err != nil && strings.Contains(err.Error(), weak) {
				t.Errorf("Load with a weak token: the error %q repeats it", err)
			}
			t.Setenv("AUTH_ALLOW_WEAK_TOKENS", "true")
			if err := stepservice.Load(&config{}); err != nil {
				t.Errorf("Load with a weak token, allowed: %v", err)
			}
		})
	}
	t.Run("no tokens", func(t *testing.T) {
		t.Setenv("AUTH_TOKENS", "")
		if err := stepservice.Load(&config{}); err == nil || !strings.Contains(err.Error(), "AUTH_TOKENS") {
			t.Errorf("Load without tokens: got %v, want an error naming AUTH_TOKENS", err)
		}
	})
}

// AUTH_ALLOW_WEAK_TOKENS is warned of at start-up, with where the weak
// tokens are configured and never the tokens.
func TestWeakTokensWarning(t *testing.T) {
	t.Parallel()
	for list, want := range map[string]string{
		"dev-token=dev," + testToken + "=alice": "AUTH_TOKENS entry 1: the token is a known placeholder",
		testToken + "=alice":                    "AUTH_ALLOW_WEAK_TOKENS=true",
	} {
		tokens, err := auth.Load(list, "")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		warnWeakTokens(slog.New(slog.NewTextHandler(&buf, nil)), tokens)
		out := buf.String()
		if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "AUTH_ALLOW_WEAK_TOKENS") || !strings.Contains(out, want) {
			t.Errorf("warning for %q: got %q, want a warning naming AUTH_ALLOW_WEAK_TOKENS and %q", list, out, want)
		}
		if strings.Contains(out, "dev-token") || strings.Contains(out, testToken) {
			t.Errorf("warning for %q: %q repeats a token", list, out)
		}
	}
}

// TestRun runs the service as main does, against a nats-server process and
// a Postgres schema: it serves the API and the ops endpoints, and on
// shutdown ends a Prefer: wait at once and returns. (The wait and the
// shutdown timeout are far longer than the test's deadline: only shutdown
// ending them lets the test see the answer and run return.)
func TestRun(t *testing.T) {
	n := testenv.StartNATS(t)
	pg := testenv.StartPostgres(t)
	nc, _ := n.Connect()
	requested := testenv.Subscribe(t, nc, "uploads.requested.>")
	httpAddr, metricsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	for k, v := range map[string]string{
		"NATS_URL": n.URL(), "DATABASE_URL": pg.URL, "HTTP_ADDR": httpAddr, "METRICS_ADDR": metricsAddr,
		"AUTH_TOKENS": testToken + "=alice", "STAGING_TTL": "1h", "LOG_FORMAT": "text",
		"WAIT_MAX": "1h", "SHUTDOWN_TIMEOUT": "1h",
	} {
		t.Setenv(k, v)
	}
	cfg := &config{Config: stepservice.Config{MetricsAddr: ":9100"}}
	if err := stepservice.Load(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx, cfg, testenv.Logger(t)) }()

	ready := "http://" + metricsAddr + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	for code := 0; code != http.StatusOK; {
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %d, want 200", ready, code)
		}
		time.Sleep(20 * time.Millisecond)
		if resp, err := http.Get(ready); err == nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
	}

	post := func(key string, header ...string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/v1/uploads?subject=users/1/avatar", bytes.NewReader([]byte("hello "+key)))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Content-Type", "text/plain")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("POST: %v", err)
			return nil, nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := post("first")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: got %d %s, want 202", resp.StatusCode, body)
	}
	requested.Await(t, 1, 30*time.Second)
	get, err := http.NewRequest(http.MethodGet, "http://"+httpAddr+resp.Header.Get("Location"), nil)
	if err != nil {
		t.Fatal(err)
	}
	get.Header.Set("Authorization", "Bearer "+testToken)
	gresp, err := http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ State string }
	_ = json.NewDecoder(gresp.Body).Decode(&st)
	gresp.Body.Close()
	if gresp.StatusCode != http.StatusOK || st.State != "pending" {
		t.Errorf("GET: got %d %q, want 200 pending", gresp.StatusCode, st.State)
	}
	if got := testenv.ScrapeCounter(t, "http://"+metricsAddr+"/metrics", "blobref_ingest_requests_total", `code="202"`); got != 1 {
		t.Errorf("requests_total{code=202}: got %v, want 1", got)
	}

	// Many uploads at once, more than the pool has connections: they share
	// batches and connections, and none may starve.
	const concurrent = 24
	codes := make(chan int, concurrent)
	for i := range concurrent {
		go func() {
			resp, _ := post(fmt.Sprintf("burst-%d", i))
			if resp == nil {
				codes <- 0
				return
			}
			codes <- resp.StatusCode
		}()
	}
	for range concurrent {
		select {
		case code := <-codes:
			if code != http.StatusAccepted {
				t.Errorf("concurrent POST: got %d, want 202", code)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("concurrent POSTs did not all answer within 30s (connection starvation)")
		}
	}
	requested.Await(t, concurrent, 30*time.Second)

	// Shut down while a request waits for completion: it answers 202 at once.
	waiting := make(chan int, 1)
	go func() {
		resp, _ := post("second", "Prefer", "wait=3600")
		if resp == nil {
			waiting <- 0
			return
		}
		waiting <- resp.StatusCode
	}()
	requested.Await(t, 1, 30*time.Second)
	cancel()
	select {
	case code := <-waiting:
		if code != http.StatusAccepted {
			t.Errorf("waiting POST at shutdown: got %d, want 202", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waiting POST did not answer at shutdown")
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after shutdown")
	}
}
