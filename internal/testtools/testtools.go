// Package testtools provides the programs blobref's tests run besides Go
// and Postgres, each pinned to one version: a MinIO server (the S3 tests),
// fake-gcs-server (the gs:// tests), Azurite (the azblob:// tests), the
// NATS CLI (the recipes of docs/operations.md) and nats-server (every
// JetStream test, see natsproc); and the checkers make lint runs, gosec and govulncheck.
// It is the one place that knows their versions and how to install them,
// into the user's cache directory, ~/.cache/blobref, one entry per
// version.
//
// `make test-tools` (which `make test` runs first) installs every one up
// front with Install. A test finds its tool with the function named after
// it (MinIO, FakeGCS, ...), which installs it on demand when a test runs
// without make: processes that start at once take turns, so each tool is
// installed once per machine.
package testtools

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// CacheDir is where the tools are kept: blobref under the user's cache
// directory ($XDG_CACHE_HOME or ~/.cache on Linux).
func CacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("testtools: no cache directory: %w", err)
	}
	return filepath.Join(dir, "blobref"), nil
}

// MinIO returns the MinIO server binary the S3 tests run: $BLOBREF_MINIO,
// the pinned version in the cache, minio on PATH, or else the pinned
// version installed now.
func MinIO() (string, error) { return minio.find() }

// NATSCLI returns the NATS CLI binary the recipe tests run:
// $BLOBREF_NATS_CLI, the pinned version in the cache (in a directory of
// its own, which can go first on a PATH), nats on PATH, or else the pinned
// version installed now.
func NATSCLI() (string, error) { return natsCLI.find() }

// FakeGCS returns the fake-gcs-server binary the gs:// tests run:
// $BLOBREF_FAKE_GCS_SERVER, the pinned version in the cache,
// fake-gcs-server on PATH, or else the pinned version installed now.
func FakeGCS() (string, error) { return fakeGCS.find() }

// Azurite returns Azurite's blob service, azurite-blob, which the azblob://
// tests run: $BLOBREF_AZURITE_BLOB, the pinned version in the cache,
// azurite-blob on PATH, or else the pinned version installed now (with
// npm; it needs Node.js).
func Azurite() (string, error) { return azurite.find() }

// NATSServer returns a nats-server binary of the module version the
// workspace requires (NATSServerModule), building it now when the cache
// has none. It must run inside the workspace.
func NATSServer() (string, error) { return natsServer.find() }

// Path returns the binary named name ("minio", "nats", "nats-server",
// "fake-gcs-server", "azurite-blob", or the checkers make lint runs,
// "gosec" and "govulncheck") as the function for that tool finds it,
// installing the pinned version when there is none.
func Path(name string) (string, error) {
	t, ok := byName[name]
	if !ok {
		names := slices.Sorted(maps.Keys(byName))
		return "", fmt.Errorf("testtools: no tool %q; the tools are %s", name, strings.Join(names, ", "))
	}
	return t.find()
}

// find returns the tool's binary: the one its variable names, the cached
// one, the one on PATH, or else the one it installs now, saying so on
// stderr (a test's output).
func (t *tool) find() (string, error) {
	if t.env != "" {
		if p := os.Getenv(t.env); p != "" {
			if _, err := os.Stat(p); err != nil { // #nosec G703 -- the variable names the binary its user chose to run
				return "", fmt.Errorf("testtools: %s=%s: %w", t.env, p, err)
			}
			return p, nil
		}
	}
	e, err := t.resolve()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(e.exe); err == nil {
		return e.exe, nil
	}
	if t.onPath != "" {
		if p, err := exec.LookPath(t.onPath); err == nil {
			return p, nil
		}
	}
	upfront := ""
	if slices.Contains(all, t) {
		upfront = " (make test-tools installs every test tool up front)"
	}
	fmt.Fprintf(os.Stderr, "testtools: %s is not installed: installing it now, once per machine%s\n", e.label, upfront)
	if err := t.ensure(context.Background(), e, os.Stderr); err != nil {
		return "", err
	}
	return e.exe, nil
}
