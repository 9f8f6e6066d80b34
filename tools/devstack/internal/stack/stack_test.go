//go:build unix

package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/blobref/blobref/internal/natsproc"
	"github.com/blobref/blobref/internal/testenv"
)

// Fake services: shell scripts that behave like a service towards the
// stack, so the lifecycle tests run in milliseconds.
const (
	graceful = `#!/bin/sh
trap 'echo "got SIGTERM"; exit 0' TERM
echo "started NATS_URL=$NATS_URL LOG_FORMAT=$LOG_FORMAT METRICS_ADDR=$METRICS_ADDR DATABASE_URL=$DATABASE_URL"
while :; do sleep 0.05; done
`
	crashing = `#!/bin/sh
echo "starting"
sleep 0.2
echo "boom" >&2
exit 3
`
	stubborn = `#!/bin/sh
trap '' TERM
echo "ignoring SIGTERM"
while :; do sleep 0.05; done
`
)

// fakeBin writes the scripts to a directory as blobwriter and refwriter,
// and a graceful ingest that shows its HTTP settings.
func fakeBin(t *testing.T, blobwriter, refwriter string) string {
	t.Helper()
	dir := t.TempDir()
	ingest := strings.Replace(graceful, "METRICS_ADDR=$METRICS_ADDR", "HTTP_ADDR=$HTTP_ADDR AUTH_TOKENS=$AUTH_TOKENS", 1)
	for name, script := range map[string]string{"blobwriter": blobwriter, "refwriter": refwriter, "ingest": ingest, "notifier": graceful} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fakeConfig runs the fake services in bin on a free NATS port, with a
// schema of the test database as DATABASE_URL (which devstack checks, and
// the fake services do not use).
func fakeConfig(t *testing.T, bin string, out *testenv.SyncBuffer) Config {
	t.Helper()
	return Config{
		NATSPort:    0,
		DataDir:     t.TempDir(),
		DatabaseURL: freshSchema(t),
		BlobURL:     "mem://",
		BinDir:      bin,
		Services: []Service{
			{Name: "blobwriter", MetricsAddr: "127.0.0.1:0"},
			{Name: "refwriter", MetricsAddr: "127.0.0.1:0"},
		},
		Env:         []string{"PATH=" + os.Getenv("PATH"), "NATS_URL=nats://elsewhere:4222"},
		Out:         out,
		StopTimeout: 10 * time.Second,
	}
}

// natsProcess is Config.serveNATS for the tests that run the real
// services: nats-server as a process of its own (see natsproc), so that the
// race detector checks devstack and the services, not the server.
func natsProcess(host string, port int, storeDir string) (jetStreamServer, error) {
	if host != "127.0.0.1" {
		return nil, fmt.Errorf("natsProcess: host %q, want 127.0.0.1", host)
	}
	srv, err := natsproc.Start(natsproc.Config{StoreDir: storeDir, Port: max(port, 0)})
	if err != nil {
		return nil, err
	}
	return natsProc{srv}, nil
}

type natsProc struct{ *natsproc.Server }

func (p natsProc) ClientURL() string { return p.URL() }

// running is a stack running in the background.
type running struct {
	st   *Stack
	errc chan error
	stop context.CancelFunc
}

func runStack(t *testing.T, cfg Config) *running {
	t.Helper()
	st, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{st: st, errc: make(chan error, 1), stop: cancel}
	go func() { r.errc <- st.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.errc:
		case <-time.After(time.Minute):
			t.Error("stack did not stop within a minute")
		}
	})
	return r
}

func (r *running) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-r.st.Ready():
	case err := <-r.errc:
		r.errc <- err
		t.Fatalf("stack stopped before it was ready: %v", err)
	case <-time.After(timeout):
		t.Fatalf("stack not ready after %s", timeout)
	}
}

func (r *running) waitExit(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-r.errc:
		r.errc <- err // for the cleanup
		return err
	case <-time.After(timeout):
		t.Fatalf("stack did not exit within %s", timeout)
		return nil
	}
}

// waitOutput waits until out holds each of wants: the fake services print
// once they have set up their signal handling.
func waitOutput(t *testing.T, out *testenv.SyncBuffer, wants ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, want := range wants {
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("output lacks %q after 10s; got:\n%s", want, out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// checkGone fails the test if any of pids still runs or NATS still listens.
func checkGone(t *testing.T, pids []int, natsURL string) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d: got %v, want ESRCH (exited)", pid, err)
		}
	}
	addr := strings.TrimPrefix(natsURL, "nats://")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("NATS still listens on %s after Run returned", addr)
	}
}

func TestRunStopsOnContext(t *testing.T) {
	t.Parallel()
	out := &testenv.SyncBuffer{}
	r := runStack(t, fakeConfig(t, fakeBin(t, graceful, graceful), out))
	r.waitReady(t, 30*time.Second)
	waitOutput(t, out, "blobwriter | started", "refwriter  | started")
	url := r.st.NATSURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("NATSURL: got %q, want nats://127.0.0.1:<port>", url)
	}

	r.stop()
	if err := r.waitExit(t, 30*time.Second); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	checkGone(t, r.st.PIDs(), url)

	got := out.String()
	for _, want := range []string{
		"blobwriter | started NATS_URL=" + url + " LOG_FORMAT=text METRICS_ADDR=127.0.0.1:0",
		"refwriter  | started NATS_URL=" + url,
		"nats -s " + url + " pub uploads.requested.demo1 'hello' -H ce-specversion:1.0",
		"blobwriter | got SIGTERM",
		"devstack   | blobwriter stopped",
		"devstack   | refwriter stopped",
		"devstack   | NATS stopped",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q; got:\n%s", want, got)
		}
	}
}

func TestRunFailsWhenAServiceExits(t *testing.T) {
	t.Parallel()
	out := &testenv.SyncBuffer{}
	r := runStack(t, fakeConfig(t, fakeBin(t, crashing, graceful), out))
	err := r.waitExit(t, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "blobwriter exited unexpectedly: exit status 3") {
		t.Fatalf("Run: got %v, want blobwriter exited unexpectedly: exit status 3", err)
	}
	checkGone(t, r.st.PIDs(), r.st.NATSURL())
	got := out.String()
	for _, want := range []string{"blobwriter | boom", "refwriter  | got SIGTERM", "devstack   | refwriter stopped"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q; got:\n%s", want, got)
		}
	}
}

func TestRunKillsAServiceThatIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	out := &testenv.SyncBuffer{}
	cfg := fakeConfig(t, fakeBin(t, graceful, stubborn), out)
	cfg.StopTimeout = 300 * time.Millisecond
	r := runStack(t, cfg)
	r.waitReady(t, 30*time.Second)
	waitOutput(t, out, "blobwriter | started", "refwriter  | ignoring SIGTERM")
	r.stop()
	err := r.waitExit(t, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "refwriter killed after 300ms") {
		t.Fatalf("Run: got %v, want refwriter killed after 300ms", err)
	}
	checkGone(t, r.st.PIDs(), r.st.NATSURL())
}

func TestNATSPortTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port

	t.Run("fallback", func(t *testing.T) {
		out := &testenv.SyncBuffer{}
		cfg := fakeConfig(t, fakeBin(t, graceful, graceful), out)
		cfg.NATSPort, cfg.NATSPortFallback = taken, true
		r := runStack(t, cfg)
		r.waitReady(t, 30*time.Second)
		if url := r.st.NATSURL(); url == fmt.Sprintf("nats://127.0.0.1:%d", taken) {
			t.Fatalf("NATSURL: got the taken port %d", taken)
		}
		if want := fmt.Sprintf("port %d is taken; NATS listens on a free port instead", taken); !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q; got:\n%s", want, out.String())
		}
	})
	t.Run("no fallback", func(t *testing.T) {
		cfg := fakeConfig(t, fakeBin(t, graceful, graceful), &testenv.SyncBuffer{})
		cfg.NATSPort = taken
		r := runStack(t, cfg)
		if err := r.waitExit(t, 30*time.Second); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("NATS port %d", taken)) {
			t.Fatalf("Run: got %v, want an error about NATS port %d", err, taken)
		}
	})
}

// ingest's API port taken: it listens on a free port, the stack says so
// and its curl hint uses that port with the dev token; an AUTH_TOKENS of
// the user's replaces the dev token.
func TestIngestAPIPort(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() }) // after the parallel subtests
	taken := ln.Addr().(*net.TCPAddr).Port
	ingest := func() Service {
		for _, svc := range DefaultServices() {
			if svc.Name == "ingest" {
				svc.MetricsAddr, svc.HTTPAddr = "127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", taken)
				return svc
			}
		}
		t.Fatal("DefaultServices has no ingest")
		return Service{}
	}

	t.Run("taken", func(t *testing.T) {
		t.Parallel()
		out := &testenv.SyncBuffer{}
		cfg := fakeConfig(t, fakeBin(t, graceful, graceful), out)
		cfg.Services = append(cfg.Services, ingest())
		r := runStack(t, cfg)
		r.waitReady(t, 30*time.Second)
		url := r.st.HTTPURL("ingest")
		if url == "" || url == fmt.Sprintf("http://127.0.0.1:%d", taken) {
			t.Fatalf("HTTPURL(ingest): got %q, want another port than the taken %d", url, taken)
		}
		waitOutput(t, out,
			fmt.Sprintf("port %d is taken; ingest's API listens on %s instead", taken, strings.TrimPrefix(url, "http://")),
			"ingest     | started NATS_URL="+r.st.NATSURL()+" LOG_FORMAT=text HTTP_ADDR="+strings.TrimPrefix(url, "http://")+" AUTH_TOKENS=dev-token=dev",
			"devstack   |   "+DemoCurl(url, DevToken),
			"-H \"Authorization: Bearer dev-token\"",
		)
	})
	t.Run("user tokens", func(t *testing.T) {
		t.Parallel()
		out := &testenv.SyncBuffer{}
		cfg := fakeConfig(t, fakeBin(t, graceful, graceful), out)
		cfg.Services = append(cfg.Services, ingest())
		cfg.Env = append(cfg.Env, "AUTH_TOKENS=mine=me")
		r := runStack(t, cfg)
		r.waitReady(t, 30*time.Second)
		waitOutput(t, out, "AUTH_TOKENS=mine=me", "devstack   |   "+DemoCurl(r.st.HTTPURL("ingest"), "$TOKEN"))
		if strings.Contains(out.String(), "dev-token") {
			t.Errorf("output mentions dev-token although AUTH_TOKENS is set:\n%s", out.String())
		}
	})
}

func TestNewRejectsMissingBinaries(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, t.TempDir(), &testenv.SyncBuffer{})
	_, err := New(cfg)
	if err == nil || !strings.Contains(err.Error(), "blobwriter not found (run make build") {
		t.Fatalf("New: got %v, want blobwriter not found", err)
	}
}

func TestChildEnv(t *testing.T) {
	t.Parallel()
	got := childEnv(
		[]string{"PATH=/bin", "NATS_URL=nats://old", "LOG_FORMAT=json", "LOG_LEVEL=debug"},
		map[string]string{"NATS_URL": "nats://new", "BLOB_URL": "mem://"},
		map[string]string{"LOG_FORMAT": "text", "SHUTDOWN_TIMEOUT": "25s"},
	)
	want := []string{"PATH=/bin", "LOG_FORMAT=json", "LOG_LEVEL=debug", "SHUTDOWN_TIMEOUT=25s", "BLOB_URL=mem://", "NATS_URL=nats://new"}
	if !slices.Equal(got, want) {
		t.Errorf("childEnv:\n got %q\nwant %q", got, want)
	}
}

func TestDemoCommand(t *testing.T) {
	t.Parallel()
	d := DemoUpload("demo1", time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)))
	want := "nats pub uploads.requested.demo1 'hello'" +
		" -H ce-specversion:1.0 -H ce-id:demo1 -H ce-type:io.blobref.upload.requested.v1" +
		" -H ce-source:/cli -H ce-subject:users/42/avatar -H ce-time:2026-01-02T02:04:05Z" +
		" -H ce-datacontenttype:text/plain" +
		" -H ce-sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" +
		" -H Nats-Msg-Id:demo1"
	if got := d.Command("nats://127.0.0.1:4222"); got != want {
		t.Errorf("Command:\n got %s\nwant %s", got, want)
	}
	if got := d.Command("nats://127.0.0.1:4333"); !strings.HasPrefix(got, "nats -s nats://127.0.0.1:4333 pub ") {
		t.Errorf("Command on another port: got %s, want it to start with nats -s nats://127.0.0.1:4333 pub", got)
	}
}

func TestLineWriter(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	o := newOutput(&buf, []string{"devstack", "svc"})
	w := o.writer("svc")
	for _, p := range []string{"one\ntw", "o\n", "three\r\nfour"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	w.flush()
	want := "svc      | one\nsvc      | two\nsvc      | three\nsvc      | four\n"
	if got := buf.String(); got != want {
		t.Errorf("output:\n got %q\nwant %q", got, want)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://postgres@127.0.0.1:5432/test":         "postgres://postgres@127.0.0.1:5432/test",
		"postgres://app:s3cret@db:5432/blobref?x=1":       "postgres://app:xxxxx@db:5432/blobref?x=1",
		"file:///tmp/blobs?create_dir=true":               "file:///tmp/blobs?create_dir=true",
		"host=db user=app password=s3cret dbname=blobref": "host=db user=app password=xxxxx dbname=blobref",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q): got %q, want %q", in, got, want)
		}
	}
}

// TestEmbeddedNATSLimits: the embedded server's JetStream limits are
// deploy/nats/nats.conf's, whatever the disk has free. (Not parallel: it
// sets the passwords deploy's configuration takes from the environment.)
func TestEmbeddedNATSLimits(t *testing.T) {
	path := filepath.Join("..", "..", "..", "..", "deploy", "nats", "nats.conf")
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\$([A-Z]+_NATS_PASSWORD)`).FindAllSubmatch(text, -1) {
		t.Setenv(string(m[1]), "unused")
	}
	deploy, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := New(fakeConfig(t, fakeBin(t, graceful, graceful), &testenv.SyncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := st.embeddedNATS("127.0.0.1", server.RANDOM_PORT, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	got := ns.(embedded).JetStreamConfig()
	if got == nil {
		t.Fatal("the embedded server runs without JetStream")
	}
	if got.MaxStore != deploy.JetStreamMaxStore || got.MaxMemory != deploy.JetStreamMaxMemory {
		t.Errorf("embedded JetStream: max store %d, max memory %d; deploy/nats/nats.conf: %d, %d",
			got.MaxStore, got.MaxMemory, deploy.JetStreamMaxStore, deploy.JetStreamMaxMemory)
	}
}
