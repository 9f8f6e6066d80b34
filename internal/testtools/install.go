package testtools

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/blobref/blobref/internal/natsproc"
)

// Install makes sure the cache holds the pinned MinIO server and NATS CLI
// and the nats-server of the workspace's module version, building or
// installing what is missing, and says on w what it does. It must run
// inside the workspace (nats-server's version comes from go.work).
// Concurrent Installs (two `make test`s) take turns on a lock per tool, so
// each tool is built once; a binary appears under its final name whole, by
// a rename, never half-written.
func Install(ctx context.Context, w io.Writer) error {
	dir, err := CacheDir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testtools: %w", err)
	}
	fmt.Fprintf(w, "test tools in %s\n", dir)

	minio, err := MinIOPath()
	if err != nil {
		return err
	}
	if err := install(ctx, w, tool{
		name: "MinIO server " + MinIOVersion, pkg: MinIOPackage + "@" + MinIOVersion,
		path: minio, exe: "minio", took: "about five minutes",
	}); err != nil {
		return err
	}
	cli, err := NATSCLIPath()
	if err != nil {
		return err
	}
	if err := install(ctx, w, tool{
		name: "NATS CLI " + NATSCLIVersion, pkg: NATSCLIPackage + "@" + NATSCLIVersion,
		path: filepath.Dir(cli), exe: "nats", dir: true, took: "about a minute",
	}); err != nil {
		return err
	}

	start := time.Now()
	fmt.Fprintf(w, "  nats-server (%s at the workspace's version): ", natsproc.Module)
	bin, err := natsproc.Binary()
	if err != nil {
		fmt.Fprintln(w, "failed")
		return err
	}
	fmt.Fprintf(w, "%s (%s)\n", bin, since(start))
	return nil
}

// tool is a program installed with go install.
type tool struct {
	name string // what the output calls it
	pkg  string // what go install installs: package@version
	path string // the cached binary, or with dir its directory
	exe  string // the name go install gives the binary
	dir  bool   // path is a directory holding exe
	took string // how long a build usually takes
}

func install(ctx context.Context, w io.Writer, t tool) error {
	if _, err := os.Stat(t.path); err == nil {
		fmt.Fprintf(w, "  %s: cached (%s)\n", t.name, t.path)
		return nil
	}
	cache := filepath.Dir(t.path)
	unlock, err := lock(filepath.Join(cache, ".lock-"+t.exe), func() {
		fmt.Fprintf(w, "  %s: waiting for another process that builds it\n", t.name)
	})
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(t.path); err == nil { // built while we waited
		fmt.Fprintf(w, "  %s: cached (%s)\n", t.name, t.path)
		return nil
	}
	// Left by a build that was interrupted: only lock holders create them.
	stale, _ := filepath.Glob(filepath.Join(cache, ".build-"+t.exe+"-*"))
	for _, d := range stale {
		_ = os.RemoveAll(d)
	}
	tmp, err := os.MkdirTemp(cache, ".build-"+t.exe+"-")
	if err != nil {
		return fmt.Errorf("testtools: %w", err)
	}
	defer os.RemoveAll(tmp)

	start := time.Now()
	fmt.Fprintf(w, "  %s: go install %s into %s (%s, once)\n", t.name, t.pkg, cache, t.took)
	cmd := exec.CommandContext(ctx, "go", "install", t.pkg)
	// GOWORK=off: a tool's own go.mod decides its dependencies, not
	// blobref's workspace. GOTOOLCHAIN=local: the Go that runs the tests.
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0", "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS=-trimpath")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testtools: go install %s: %w\n%s", t.pkg, err, out)
	}
	built, final := filepath.Join(tmp, t.exe), t.path
	if t.dir {
		built, final = tmp, t.path // the directory holding the binary
	}
	if err := os.Chmod(built, 0o755); err != nil {
		return fmt.Errorf("testtools: %w", err)
	}
	if err := os.Rename(built, final); err != nil {
		return fmt.Errorf("testtools: %w", err)
	}
	fmt.Fprintf(w, "  %s: built in %s (%s)\n", t.name, since(start), t.path)
	return nil
}

func since(start time.Time) string { return time.Since(start).Round(100 * time.Millisecond).String() }
