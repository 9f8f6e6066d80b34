// Command pipelinebench measures blobref through its HTTP front door
// (issues 3 and 10), with nats-server and the services each running as a
// process of its own against a fresh Postgres schema and file:// bucket:
//
//   - the HTTP path at -clients concurrent clients (1, 16, 64 and 256 by
//     default), each sending 4 KiB uploads with Prefer: wait=30 and the same
//     Idempotency-Key again until 200/201: uploads/s referenced, p50 and
//     p99, retries, ingest's peak RSS;
//   - accept only (no Prefer, done at 202) at -accept-clients clients;
//   - CPU µs per upload of each process (ingest, blobwriter, refwriter,
//     nats-server, the Postgres backends of the benchmark's connections),
//     and the same for the bulk path (request events published straight to
//     JetStream, with the same services running: ingest's read model folds
//     those events in too) measured in the same round, with the ratio of
//     the two; each phase ends once the read model has folded in its
//     uploads' events;
//   - the HTTP accept floor (bench/cmd/httpfloor, unless -floor=false):
//     the least any front door does for a 202 (read the body, one
//     group-committed INSERT, a JetStream publish acked), on a pipeline of
//     its own, with accept only's load; and the ceilings it sets on this
//     machine, with the bulk path of the same round, beside the targets;
//   - the latency floor (bench/cmd/chainfloor, unless -latency-floor=false,
//     when -clients has 1): the round trips of one upload's path from its
//     request to its 201, by the least code, in three processes as the
//     services are, at one client; the p50 it reaches is set beside the
//     1-client target;
//   - the peak RSS of every process while one large upload (-size) streams
//     through, next to a small one.
//
// Every figure is the median of -runs rounds with its spread. Each
// -services-dir is a variant (a directory of prebuilt ingest, blobwriter
// and refwriter, or "tree" for this tree's, the default); a round runs each
// variant once, so that two trees are compared interleaved in one session,
// and the report sets them side by side. After each phase a sample of
// -check uploads is checked whole (rows and objects). `make bench-ingest`
// runs it; it must run inside the repository.
//
// Usage:
//
//	go run ./bench/cmd/pipelinebench [-n 2000] [-clients 1,16,64,256] [-accept-clients 64] [-bulk-n 20000]
//	    [-floor=false] [-latency-floor=false] [-runs 3] [-size 1GiB] [-services-dir DIR]... [-env KEY=VALUE]... [-out FILE]
//
// -runs 0 skips the rounds, -size 0 the memory phase. Postgres is
// -database-url, by default DATABASE_URL or, unset,
// postgres://postgres@127.0.0.1:5432/test; its pgxpool settings
// (pool_max_conns, ...) reach the services. Each pipeline gets a fresh
// directory under -work-dir; the rounds' directories are not deleted
// (deleting many files slows file creation on ext4 for minutes, which would
// skew what runs next): remove -work-dir when done.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blobref/blobref/bench/internal/ingestbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the command with args: it writes the report to stdout (and
// -out), progress and errors to stderr, and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, out, timeout, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "pipelinebench: %v\n", err)
		return 2
	}
	cfg.Progress = stderr
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("-timeout %s passed", timeout))
	defer cancel()

	rep, err := ingestbench.Run(ctx, cfg)
	if rep != nil {
		w := stdout
		var f *os.File
		if out != "" {
			var ferr error
			if f, ferr = os.Create(out); ferr != nil { // #nosec G304 G703 -- the file -out names
				err = errors.Join(err, ferr)
			} else {
				w = io.MultiWriter(stdout, f)
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
		fmt.Fprintf(stderr, "pipelinebench: %v\n", err)
		return 1
	}
	return 0
}

// parseFlags is the one place the command reads its flags and environment.
func parseFlags(args []string) (ingestbench.Config, string, time.Duration, error) {
	fs := flag.NewFlagSet("pipelinebench", flag.ContinueOnError)
	cfg := ingestbench.Config{
		DatabaseURL: os.Getenv("DATABASE_URL"),
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	uploadSize, large, small := byteSize(4<<10), byteSize(1<<30), byteSize(1<<20)
	clients := intList{1, 16, 64, 256}
	fs.IntVar(&cfg.Uploads, "n", 2000, "uploads of each HTTP phase")
	fs.Var(&clients, "clients", "comma-separated numbers of concurrent HTTP clients of the HTTP path, a phase each (empty: none)")
	fs.IntVar(&cfg.AcceptClients, "accept-clients", 64, "concurrent clients of the accept-only phase (0 skips it)")
	fs.IntVar(&cfg.BulkUploads, "bulk-n", 20000, "request events of the bulk phase (0 skips it)")
	fs.IntVar(&cfg.Wait, "wait", 30, "the HTTP path's Prefer: wait, in seconds")
	fs.IntVar(&cfg.Runs, "runs", 3, "rounds, each running every variant once (the report shows the median and the spread); 0 skips them")
	fs.IntVar(&cfg.Warmup, "warmup", 200, "unmeasured uploads through each round's HTTP pipeline first")
	fs.IntVar(&cfg.Check, "check", 50, "uploads of each phase checked whole afterwards (rows and objects)")
	fs.BoolVar(&cfg.Analyze, "analyze", true, "ANALYZE the pipeline's tables before each measured HTTP phase, as autovacuum would on a server that has run a while (false: plans made on the warm-up's first rows may stand)")
	fs.BoolVar(&cfg.Floor, "floor", true, "measure the HTTP accept floor in each round, at -accept-clients clients (64 when that is 0), and the ceilings it sets")
	fs.BoolVar(&cfg.LatencyFloor, "latency-floor", true, "measure the latency floor in each round (chainfloor: the same round trips as one upload's path, by the least code), at 1 client, when -clients has 1")
	fs.Var(&uploadSize, "upload-size", "size of each upload of the rounds")
	fs.Var(&large, "size", "size of the memory phase's large upload; 0 skips the phase")
	fs.Var(&small, "small-size", "size of the memory phase's small upload, to compare with")
	fs.Func("services-dir", "a variant: a directory of prebuilt ingest, blobwriter and refwriter, or \"tree\" for this tree's (repeatable; default: tree)", func(s string) error {
		if s == "tree" {
			s = ""
		} else if fi, err := os.Stat(s); err != nil || !fi.IsDir() {
			return fmt.Errorf("%q is not a directory", s)
		}
		cfg.ServicesDirs = append(cfg.ServicesDirs, s)
		return nil
	})
	fs.Func("env", "KEY=VALUE setting for every service (repeatable), e.g. -env CONSUMER_CONCURRENCY=16", func(s string) error {
		if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
			return errors.New("want KEY=VALUE")
		}
		cfg.Env = append(cfg.Env, s)
		return nil
	})
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "Postgres URL to create the benchmark's schemas in, $DATABASE_URL if set; its pgxpool settings (pool_max_conns, ...) reach the services")
	fs.StringVar(&cfg.WorkDir, "work-dir", filepath.Join(os.TempDir(), "blobref-bench-ingest"), "where each run gets a fresh directory; the rounds' are not deleted")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the memory phase's directories too (large files)")
	out := fs.String("out", "", "also write the report to this file")
	timeout := fs.Duration("timeout", 3*time.Hour, "give up after this long")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", time.Minute, "fail a round when a request gets no answer within this long")
	if err := fs.Parse(args); err != nil {
		return cfg, "", 0, err
	}
	if fs.NArg() > 0 {
		return cfg, "", 0, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.Clients = clients
	cfg.UploadSize, cfg.LargeSize, cfg.SmallSize = int(uploadSize), int64(large), int64(small)
	if err := cfg.Validate(); err != nil {
		return cfg, "", 0, err
	}

	// The report names the command with every setting that shapes the
	// measurement, defaults included.
	cmd := []string{"pipelinebench"}
	for _, name := range []string{"n", "clients", "accept-clients", "bulk-n", "wait", "runs", "warmup", "check", "analyze", "floor", "upload-size", "size", "small-size"} {
		cmd = append(cmd, "-"+name+" "+fs.Lookup(name).Value.String())
	}
	for _, dir := range cfg.ServicesDirs {
		if dir == "" {
			dir = "tree"
		}
		cmd = append(cmd, "-services-dir "+dir)
	}
	for _, kv := range cfg.Env {
		cmd = append(cmd, "-env "+kv)
	}
	cfg.Command = strings.Join(cmd, " ")
	return cfg, *out, *timeout, nil
}

// intList is a flag holding comma-separated positive numbers.
type intList []int

func (l *intList) Set(s string) error {
	var out intList
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}

func (l *intList) String() string {
	parts := make([]string, len(*l))
	for i, n := range *l {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
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
