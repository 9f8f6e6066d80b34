package stepservice_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// A service stopped while it starts (here: waiting for a Postgres that
// accepts the connection and never answers) exits 0 and logs no error:
// Ctrl-C during `make run`'s start is a stop, not a failure.
func TestServiceStoppedWhileStartingExitsCleanly(t *testing.T) {
	t.Parallel()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	connected := make(chan net.Conn, 1)
	go func() {
		if c, err := silent.Accept(); err == nil {
			connected <- c // held open, never answered
		}
	}()

	cmd := exec.Command(filepath.Join(testenv.BuildServices(t, "blobwriter"), "blobwriter"))
	cmd.Env = append(os.Environ(),
		"DATABASE_URL=postgres://postgres@"+silent.Addr().String()+"/test?sslmode=disable",
		"NATS_URL=nats://"+testenv.FreeAddr(t), "BLOB_URL=mem://", "METRICS_ADDR="+testenv.FreeAddr(t))
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case c := <-connected:
		defer c.Close()
	case err := <-done:
		t.Fatalf("blobwriter exited before it reached Postgres: %v\n%s", err, out.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("blobwriter never reached Postgres\n%s", out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("blobwriter stopped while starting exited %d, want 0\n%s", exit.ExitCode(), out.String())
		}
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("blobwriter did not stop within 30s of SIGTERM\n%s", out.String())
	}
	if log := out.String(); strings.Contains(log, `"level":"ERROR"`) || !strings.Contains(log, "stopped while starting") {
		t.Fatalf("want no error and \"stopped while starting\" in the log:\n%s", log)
	}
}
