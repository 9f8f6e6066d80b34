// Command devstack runs blobref's whole pipeline on this machine: a
// JetStream server, the service binaries found next to its own executable
// (make build puts them in bin/), Postgres (the machine's, or a private one
// it runs) and a file:// bucket under ./.data. `make run` builds and starts
// it; Ctrl-C stops it; `make reset` clears its state. `devstack -h` lists
// its settings, and docs/devstack.md explains them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/blobref/blobref/tools/devstack/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := stack.Main(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
