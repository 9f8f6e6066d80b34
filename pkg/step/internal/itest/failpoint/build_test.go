//go:build unix

package failpoint_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/step/failpoint"
)

// TestReleaseBuildRefusesFailpoints builds ingest as make build and the
// Dockerfile do, and as the tests do, and starts each with
// BLOBREF_FAILPOINTS set: the release build stops at start-up with an error
// that says it has no failpoints; the test build arms them.
func TestReleaseBuildRefusesFailpoints(t *testing.T) {
	t.Parallel()
	release, tagged := t.TempDir(), t.TempDir()
	if err := testenv.BuildRelease(release, "services/ingest"); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Build(tagged, "services/ingest"); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"BLOBREF_FAILPOINTS=ingest/after-stage=crash",
		"AUTH_TOKENS=v7Kq2Zp9Lx4Wn8Rt3Ym6Hc1Jd5Gf0Bs2Qa7Ue9=alice", // a token ingest finds strong enough
		// Nothing listens at these: a service that starts keeps retrying
		// and touches no database.
		"DATABASE_URL=postgres://postgres@" + testenv.FreeAddr(t) + "/none?sslmode=disable&connect_timeout=1",
		"NATS_URL=nats://" + testenv.FreeAddr(t),
		"METRICS_ADDR=" + testenv.FreeAddr(t), "HTTP_ADDR=" + testenv.FreeAddr(t),
		"LOG_FORMAT=text",
	}

	cmd := exec.Command(filepath.Join(release, "ingest"))
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Errorf("release build with BLOBREF_FAILPOINTS: got %v, want exit status 2\n%s", err, out)
	}
	for _, want := range []string{"BLOBREF_FAILPOINTS", "-tags " + failpoint.BuildTag} {
		if !strings.Contains(string(out), want) {
			t.Errorf("release build's error does not say %q:\n%s", want, out)
		}
	}

	buf := &testenv.SyncBuffer{}
	cmd = exec.Command(filepath.Join(tagged, "ingest"))
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
	}()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(buf.String(), "failpoints armed") {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("test build exited before arming its failpoints: %v\n%s", err, buf.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("test build: no \"failpoints armed\" after a minute:\n%s", buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(buf.String(), "ingest/after-stage=crash") {
		t.Errorf("test build armed other failpoints than asked:\n%s", buf.String())
	}
}
