package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/blobref/blobref/internal/freeport"
	"github.com/blobref/blobref/internal/release"
	"github.com/blobref/blobref/pkg/step/failpoint"
)

// Build builds blobref's commands at the given paths of the repository
// (e.g. "services/blobwriter") into dir with go build, with failpoints
// (the build tag failpoint.BuildTag, so that crash tests can arm them with
// BLOBREF_FAILPOINTS) and with the race detector when the tests run with it.
func Build(dir string, paths ...string) error {
	flags := []string{"-tags", failpoint.BuildTag}
	if RaceEnabled {
		flags = append(flags, "-race")
	}
	return build(dir, flags, nil, paths)
}

// BuildRelease builds blobref's commands at the given paths into dir as
// make build and the Dockerfile do: static, without failpoints or the race
// detector.
func BuildRelease(dir string, paths ...string) error {
	return build(dir, release.BuildFlags(), []string{"CGO_ENABLED=0"}, paths)
}

func build(dir string, flags, env, paths []string) error {
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, flags...)
	for _, p := range paths {
		args = append(args, "github.com/blobref/blobref/"+p)
	}
	cmd := exec.Command("go", args...) // #nosec G204 -- go build of blobref's own packages
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %w\n%s", paths, err, out)
	}
	return nil
}

// BuildServices builds the services named into a temporary directory of the
// test's and returns it.
func BuildServices(t testing.TB, services ...string) string {
	t.Helper()
	dir := t.TempDir()
	paths := make([]string, len(services))
	for i, s := range services {
		paths[i] = "services/" + s
	}
	if err := Build(dir, paths...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// FreeAddr returns a loopback address for a server the test starts: its port
// is free and stays out of the way of outgoing connections (see freeport).
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers, for the output
// of processes a test runs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
