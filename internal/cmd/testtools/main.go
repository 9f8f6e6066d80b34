// Command testtools installs the programs blobref's tests run besides Go
// and Postgres (MinIO, the NATS CLI, nats-server, fake-gcs-server, Azurite)
// into ~/.cache/blobref, and finds Chromium for the console's browser test
// (installing Debian's package with apt-get when root), saying what it does
// and how long it took; see
// package testtools. `make test-tools` runs it, and `make test` runs that
// first. With -path NAME it prints where a tool's binary is instead,
// installing it when missing: make lint finds gosec and govulncheck so.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/blobref/blobref/internal/testtools"
)

func main() {
	path := flag.String("path", "", "print the path of this tool's binary (e.g. gosec), installing it first when missing, instead of installing the test tools")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: go run ./internal/cmd/testtools [-path NAME]   (from the workspace root)")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *path != "" {
		p, err := testtools.Path(*path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(p)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := testtools.Install(ctx, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "testtools: %v\n", err)
		stop()
		os.Exit(1)
	}
	// The console's browser test drives Chromium: found, or installed with
	// apt-get when root, here rather than inside the test's time.
	p, err := testtools.Chromium(ctx, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		stop()
		os.Exit(1)
	}
	fmt.Printf("  Chromium: %s\n", p)
}
