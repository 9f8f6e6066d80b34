// Package testtools provides the programs blobref's tests run besides Go
// and Postgres: a MinIO server (the S3 tests), the NATS CLI (the README's
// recipes) and nats-server (every JetStream test, see natsproc). Install
// builds or installs the pinned versions into the user's cache directory,
// ~/.cache/blobref, one file per version, where the tests find them. `make
// test` runs it first (`make test-tools`), so a fresh machine needs only Go
// and Postgres.
package testtools

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// The pinned versions, and the packages they are installed from with go
// install.
const (
	MinIOPackage   = "github.com/minio/minio"
	MinIOVersion   = "v0.0.0-20260212201848-7aac2a2c5b7c"
	NATSCLIPackage = "github.com/nats-io/natscli/nats"
	NATSCLIVersion = "v0.5.0"
)

// The environment variables that name a binary to use instead of the
// cached one.
const (
	MinIOEnv   = "BLOBREF_MINIO"
	NATSCLIEnv = "BLOBREF_NATS_CLI"
)

// CacheDir is where the tools are kept: blobref under the user's cache
// directory ($XDG_CACHE_HOME or ~/.cache on Linux).
func CacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("testtools: %w", err)
	}
	return filepath.Join(dir, "blobref"), nil
}

// MinIOPath is where Install puts the pinned MinIO server.
func MinIOPath() (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "minio-"+MinIOVersion), nil
}

// NATSCLIPath is where Install puts the pinned NATS CLI: a binary named
// nats in a directory of its own, which can go first on a PATH.
func NATSCLIPath() (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "natscli-"+NATSCLIVersion, "nats"), nil
}

// hint says how to get the tools when a test cannot find one.
const hint = "make test-tools builds it (make test runs that first)"

// MinIO returns the MinIO server binary the S3 tests run: $BLOBREF_MINIO,
// the pinned version in the cache, or minio on PATH.
func MinIO() (string, error) {
	cached, err := MinIOPath()
	if err != nil {
		return "", err
	}
	return find("MinIO server", MinIOEnv, cached, "minio")
}

// NATSCLI returns the NATS CLI binary the recipe tests run:
// $BLOBREF_NATS_CLI, the pinned version in the cache, or nats on PATH.
func NATSCLI() (string, error) {
	cached, err := NATSCLIPath()
	if err != nil {
		return "", err
	}
	return find("NATS CLI", NATSCLIEnv, cached, "nats")
}

func find(what, env, cached, onPath string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	if _, err := os.Stat(cached); err == nil {
		return cached, nil
	}
	if p, err := exec.LookPath(onPath); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no %s binary: not at %s, %s is not set and no %s is on PATH; %s",
		what, cached, env, onPath, hint)
}
