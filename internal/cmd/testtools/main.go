// Command testtools installs the programs blobref's tests run besides Go
// and Postgres (MinIO, the NATS CLI, nats-server, fake-gcs-server, Azurite)
// into ~/.cache/blobref, saying what it does and how long it took; see
// package testtools. `make test-tools` runs it, and `make test` runs that
// first.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/blobref/blobref/internal/testtools"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: go run ./internal/cmd/testtools   (from the workspace root; it takes no arguments)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := testtools.Install(ctx, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "testtools: %v\n", err)
		stop()
		os.Exit(1)
	}
}
