// Command devstack runs blobref's whole pipeline on this machine: an
// embedded JetStream server, the service binaries found next to its own
// executable (make build puts them in bin/), a local Postgres and a file://
// bucket under ./.data. `make run` builds and starts it; Ctrl-C stops it.
//
// ingest's API listens on 127.0.0.1:8080 (a free port if 8080 is taken,
// said in the output) and accepts the dev token dev-token (caller dev)
// unless AUTH_TOKENS is set. Metrics: ingest 127.0.0.1:9100, blobwriter
// :9101, refwriter :9102.
//
// Environment:
//
//	DEVSTACK_NATS_PORT  NATS port (default 4222; a free port if 4222 is taken)
//	DEVSTACK_DATA_DIR   JetStream store and blobs (default ./.data)
//	DEVSTACK_BIN_DIR    where the service binaries are (default: next to devstack)
//	DATABASE_URL        default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
//	BLOB_URL            default file://$PWD/.data/blobs?create_dir=true
//
// Every other variable (LOG_LEVEL, CONSUMER_*, ...) passes through to the
// services.
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/blobref/blobref/internal/buildinfo"
	"github.com/blobref/blobref/tools/devstack/internal/stack"
)

func main() {
	if len(os.Args) == 2 && buildinfo.IsVersionFlag(os.Args[1]) {
		fmt.Println(buildinfo.Version("devstack"))
		return
	}
	cfg, err := configFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		os.Exit(2)
	}
	st, err := stack.New(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := st.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		stop()
		os.Exit(1)
	}
}

// configFromEnv is the one place devstack reads its environment.
func configFromEnv() (stack.Config, error) {
	wd, err := os.Getwd()
	if err != nil {
		return stack.Config{}, err
	}
	dataDir := getenv("DEVSTACK_DATA_DIR", filepath.Join(wd, ".data"))
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return stack.Config{}, err
	}
	exe, err := os.Executable()
	if err != nil {
		return stack.Config{}, err
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	port, fallback := stack.DefaultNATSPort, true
	if v, ok := os.LookupEnv("DEVSTACK_NATS_PORT"); ok {
		if port, err = strconv.Atoi(v); err != nil || port < 0 || port > 65535 {
			return stack.Config{}, fmt.Errorf("DEVSTACK_NATS_PORT: %q is not a port", v)
		}
		fallback = false
	}
	blobURL := &url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(dataDir, "blobs")), RawQuery: "create_dir=true"}
	return stack.Config{
		NATSHost:         "127.0.0.1",
		NATSPort:         port,
		NATSPortFallback: fallback,
		StoreDir:         filepath.Join(dataDir, "nats"),
		DatabaseURL:      getenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		BlobURL:          getenv("BLOB_URL", blobURL.String()),
		BinDir:           getenv("DEVSTACK_BIN_DIR", filepath.Dir(exe)),
		Services:         stack.DefaultServices(),
		Env:              os.Environ(),
		Out:              os.Stdout,
	}, nil
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
