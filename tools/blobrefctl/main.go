// Command blobrefctl is the operator's companion to the NATS CLI where the
// CLI alone is awkward: it replays events of the UPLOADS stream with new
// Nats-Msg-Ids (one upload's request, or everything since a point in time)
// and lists and re-drives the dead letters of UPLOADS_DLQ. `blobrefctl setup`
// is the operator step that creates the streams, the staging bucket and the
// durable consumers for services run with NATS_SETUP=off. `blobrefctl -h`
// lists the commands; docs/operations.md shows them
// next to the NATS CLI recipes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/blobref/blobref/tools/blobrefctl/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
