// Command pipelinebench measures blobref's whole pipeline through its HTTP
// front door (issue 3): uploads per second end to end for small uploads,
// and the peak RSS of ingest and blobwriter while one large upload streams
// through. It builds nats-server and the services from this workspace, runs
// them as separate processes against a fresh Postgres schema and a fresh
// file:// bucket, prints a report on standard output and removes what it
// made. `make bench-ingest` runs it; it must run inside the repository.
//
// Usage:
//
//	go run ./bench/cmd/pipelinebench [-n 2000] [-c 16] [-runs 3] [-size 1GiB] [-small-size 1MiB] [-env KEY=VALUE]...
//
// -runs 0 skips the throughput phase, -size 0 the memory phase. Postgres is
// -database-url, by default DATABASE_URL or, unset, the services' default
// (postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable); its pgxpool
// settings (pool_max_conns, ...) reach the services.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blobref/blobref/bench/internal/ingestbench"
)

func main() {
	cfg, timeout, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "pipelinebench: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("-timeout %s passed", timeout))
	defer cancel()

	rep, err := ingestbench.Run(ctx, cfg)
	if rep != nil {
		if werr := rep.Write(os.Stdout); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pipelinebench: %v\n", err)
		cancel()
		stop()
		os.Exit(1)
	}
}

// parseFlags is the one place the command reads its flags and environment.
func parseFlags(args []string) (ingestbench.Config, time.Duration, error) {
	fs := flag.NewFlagSet("pipelinebench", flag.ContinueOnError)
	cfg := ingestbench.Config{
		DatabaseURL: os.Getenv("DATABASE_URL"),
		Progress:    os.Stderr,
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	uploadSize, large, small := byteSize(4<<10), byteSize(1<<30), byteSize(1<<20)
	fs.IntVar(&cfg.Uploads, "n", 2000, "uploads per throughput run")
	fs.IntVar(&cfg.Concurrency, "c", 16, "concurrent HTTP clients of the throughput runs")
	fs.IntVar(&cfg.Runs, "runs", 3, "throughput runs (the report shows each, their median and spread); 0 skips them")
	fs.Var(&uploadSize, "upload-size", "size of each upload of the throughput runs")
	fs.Var(&large, "size", "size of the memory phase's large upload; 0 skips the phase")
	fs.Var(&small, "small-size", "size of the memory phase's small upload, to compare with")
	fs.Func("env", "KEY=VALUE setting for every service (repeatable), e.g. -env CONSUMER_CONCURRENCY=16", func(s string) error {
		if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
			return errors.New("want KEY=VALUE")
		}
		cfg.Env = append(cfg.Env, s)
		return nil
	})
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "Postgres URL to create the benchmark's schema in, $DATABASE_URL if set; its pgxpool settings (pool_max_conns, ...) reach the services")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", time.Minute, "fail a throughput run when a request gets no answer within this long")
	fs.BoolVar(&cfg.KeepDir, "keep", false, "keep the working directory (binaries, JetStream store, bucket, logs)")
	if err := fs.Parse(args); err != nil {
		return cfg, 0, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.UploadSize, cfg.LargeSize, cfg.SmallSize = int(uploadSize), int64(large), int64(small)
	if err := cfg.Validate(); err != nil {
		return cfg, 0, err
	}

	// The report names the command with every setting that shapes the
	// measurement, defaults included.
	cmd := []string{"pipelinebench"}
	for _, name := range []string{"n", "c", "runs", "upload-size", "size", "small-size"} {
		cmd = append(cmd, "-"+name+" "+fs.Lookup(name).Value.String())
	}
	for _, kv := range cfg.Env {
		cmd = append(cmd, "-env "+kv)
	}
	cfg.Command = strings.Join(cmd, " ")
	return cfg, *timeout, nil
}

// byteSize is a flag holding a size in bytes: a number with an optional
// unit (B, KiB, MiB, GiB, KB, MB, GB).
type byteSize int64

// units are the suffixes Set reads; the first three are binary, the ones
// String writes.
var units = []struct {
	suffix string
	n      int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}

func (b *byteSize) Set(s string) error {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB, GiB, KB, MB or GB)", s)
	}
	*b = byteSize(n * mult)
	return nil
}

// String writes the size with the largest binary unit that divides it.
func (b *byteSize) String() string {
	n := int64(*b)
	for i := 2; i >= 0; i-- { // GiB, MiB, KiB
		if n != 0 && n%units[i].n == 0 {
			return strconv.FormatInt(n/units[i].n, 10) + units[i].suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
