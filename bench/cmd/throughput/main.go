// Command throughput measures blobref's pipeline as issue 6 asks: request
// events published to a nats-server of the benchmark's own as fast as
// JetStream accepts them, through blobwriter and refwriter (separate
// processes, built from this tree without -race, or taken from
// -services-dir) to uploads.completed, with a file:// bucket and with
// mem://; uploads/s end to end, latency, CPU per upload of every process
// (user and system apart; Postgres: the benchmark's own backends) and peak
// RSS of the services, each the median of -runs rounds; the floors of each
// stage alone, measured at the start of each round and held against their
// stage's cost in the same round, and the ceiling they set; a paced run at
// half the maximum rate, and floor (p) at the same pace beside it (the
// pipeline's durable writes alone: the least p99 the disk allows); the republish path and its ceiling (floor (a′),
// floor (a) again on the stream it left, and floor (d), the markers read
// back); and, with -backlog, the
// services' memory with that many requests pending. After each run a sample
// of -check uploads is checked whole: rows and objects. `make bench` and
// `make bench-backlog` run it; it must run inside the repository.
//
// Usage:
//
//	go run ./bench/cmd/throughput [-n 50000] [-runs 3] [-configs file,mem] [-floors] [-republish] [-paced]
//	    [-check 100] [-backlog 0] [-services-dir DIR] [-env KEY=VALUE]... [-out FILE]
//
// Every run gets a fresh directory under -work-dir, and nothing is deleted
// (on ext4, creating files right after deleting many is several times
// slower): remove -work-dir when done. Postgres is -database-url, by
// default DATABASE_URL or, unset, postgres://postgres@127.0.0.1:5432/test.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/memblob"

	"github.com/blobref/blobref/bench/internal/throughput"
)

func main() {
	cfg, out, timeout, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "throughput: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("-timeout %s passed", timeout))
	defer cancel()

	rep, err := throughput.Run(ctx, cfg)
	if rep != nil {
		w := io.Writer(os.Stdout)
		var f *os.File
		if out != "" {
			var ferr error
			if f, ferr = os.Create(out); ferr != nil { // #nosec G304 G703 -- the file -out names
				err = errors.Join(err, ferr)
			} else {
				w = io.MultiWriter(os.Stdout, f)
			}
		}
		if werr := rep.Write(w); werr != nil {
			err = errors.Join(err, werr)
		}
		if f != nil {
			err = errors.Join(err, f.Close())
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "throughput: %v\n", err)
		cancel()
		stop()
		os.Exit(1)
	}
}

// parseFlags is the one place the command reads its flags and environment.
func parseFlags(args []string) (throughput.Config, string, time.Duration, error) {
	fs := flag.NewFlagSet("throughput", flag.ContinueOnError)
	cfg := throughput.Config{DatabaseURL: os.Getenv("DATABASE_URL"), Progress: os.Stderr}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	fs.IntVar(&cfg.Uploads, "n", 50000, "uploads per run and per floor")
	fs.IntVar(&cfg.Size, "size", 4<<10, "bytes per upload")
	fs.IntVar(&cfg.Runs, "runs", 3, "rounds: each measures the floors, then runs each configuration once (the report shows the median and the range)")
	configs := fs.String("configs", "file,mem", "bucket configurations to run, comma-separated: file, mem (empty: none)")
	fs.BoolVar(&cfg.Floors, "floors", true, "measure the floors of each stage alone and the ceiling")
	fs.BoolVar(&cfg.Republish, "republish", true, "after each run, publish the same requests again (every step skipped)")
	fs.BoolVar(&cfg.Paced, "paced", true, "after the rounds, run each configuration -runs times more at half its median rate, for latency, each beside floor (p) at that pace (with -floors)")
	fs.IntVar(&cfg.Backlog, "backlog", 0, "pending request events of the memory phase (0 skips it; make bench-backlog uses 1000000)")
	fs.DurationVar(&cfg.BacklogDuration, "backlog-duration", time.Minute, "how long the memory phase watches the services")
	fs.IntVar(&cfg.Warmup, "warmup", 500, "unmeasured uploads through each pipeline before its run")
	fs.IntVar(&cfg.Check, "check", 100, "uploads of each run checked whole afterwards (rows; objects on file://)")
	fs.IntVar(&cfg.Window, "window", 4096, "the producer's window of unacknowledged publishes")
	concurrency := fs.Int("concurrency", 0, "writers and connections of the bucket and Postgres floors (default: the services' CONSUMER_CONCURRENCY, 8 unless -env sets it)")
	fs.IntVar(&cfg.Batch, "batch", 100, "uploads per transaction of the Postgres floor, messages per pull of the JetStream floor")
	fs.StringVar(&cfg.ServicesDir, "services-dir", "", "a directory with prebuilt blobwriter and refwriter to measure instead of building this tree")
	fs.Func("env", "KEY=VALUE setting for both services (repeatable), e.g. -env CONSUMER_CONCURRENCY=32", func(s string) error {
		if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
			return errors.New("want KEY=VALUE")
		}
		cfg.Env = append(cfg.Env, s)
		return nil
	})
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "Postgres URL each run creates a fresh schema in ($DATABASE_URL if set)")
	fs.StringVar(&cfg.WorkDir, "work-dir", filepath.Join(os.TempDir(), "blobref-throughput"), "where each run gets a fresh directory; nothing is deleted")
	out := fs.String("out", "", "also write the report to this file")
	timeout := fs.Duration("timeout", 3*time.Hour, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return cfg, "", 0, err
	}
	if fs.NArg() > 0 {
		return cfg, "", 0, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, c := range strings.Split(*configs, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cfg.Configs = append(cfg.Configs, c)
		}
	}
	cfg.Concurrency = *concurrency
	if cfg.Concurrency == 0 {
		cfg.Concurrency = throughput.ConcurrencyFrom(cfg.Env, 8)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, "", 0, err
	}
	cmd := []string{"throughput"}
	for _, name := range []string{"n", "size", "runs", "configs", "floors", "republish", "paced", "backlog", "warmup", "check", "window", "batch"} {
		cmd = append(cmd, "-"+name+"="+fs.Lookup(name).Value.String())
	}
	if cfg.Backlog > 0 {
		cmd = append(cmd, "-backlog-duration="+cfg.BacklogDuration.String())
	}
	if cfg.ServicesDir != "" {
		cmd = append(cmd, "-services-dir="+cfg.ServicesDir)
	}
	for _, kv := range cfg.Env {
		cmd = append(cmd, "-env "+kv)
	}
	cfg.Command = strings.Join(cmd, " ")
	return cfg, *out, *timeout, nil
}
