package stack

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/blobref/blobref/pkg/step/stepservice/buildinfo"
)

// usage is devstack's help; docs/devstack.md says more.
const usage = `devstack runs blobref's whole pipeline on this machine: a JetStream server,
the services (ingest, blobwriter, refwriter) built next to it, Postgres and a
file:// bucket, with their state under ./.data. Ctrl-C stops it all.

Usage:
  devstack            run the pipeline (make run builds the binaries and runs this)
  devstack reset      remove ./.data and drop devstack's database, together (make reset)
  devstack -h         this help
  devstack --version  how it was built

Postgres: with DATABASE_URL unset, devstack uses a database of its own,
blobref_dev, which it creates: on the Postgres at 127.0.0.1:5432 when one
listens there, or else on a private Postgres it runs from this machine's
server binaries (initdb into .data/postgres, a port of its own).

Environment:
  DATABASE_URL        a Postgres database of yours for the services, used as it is
  BLOB_URL            the bucket (default file://<data dir>/blobs?create_dir=true)
  AUTH_TOKENS         ingest's bearer tokens, token=caller,... (default: the dev token)
  DEVSTACK_DATA_DIR   where devstack keeps its state (default ./.data)
  DEVSTACK_NATS_PORT  NATS's port, exactly (default: the port of the last run,
                      else 4222, else a free one; remembered in .data)
  DEVSTACK_BIN_DIR    where the service binaries are (default: next to devstack)
  PG_BINDIR           where initdb and pg_ctl are, for the private Postgres
                      (default: the newest /usr/lib/postgresql/*/bin, or PATH)
Every other variable (LOG_LEVEL, CONSUMER_*, ...) passes through to the
services. Ports that are taken (ingest's API 8080, metrics 9100-9102) fall
back to free ones, and devstack prints where everything is.
`

// Main is devstack's command line: it runs the stack, or resets its state,
// with args (without the program name) and the environment environ, and
// returns the exit status: 0 after a clean stop, 1 when the stack failed, 2
// for a command line or setting it cannot run.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	version := fs.Bool("version", false, "")
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "devstack: %v (devstack -h shows the usage)\n", err)
		return 2
	case *version:
		fmt.Fprintln(stdout, buildinfo.Version("devstack"))
		return 0
	}
	reset := false
	switch {
	case fs.NArg() == 0:
	case fs.NArg() == 1 && fs.Arg(0) == "reset":
		reset = true
	case fs.Arg(0) == "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "devstack: unexpected arguments %q (devstack -h shows the usage)\n", fs.Args())
		return 2
	}

	cfg, err := configFromEnv(environ)
	if err != nil {
		fmt.Fprintf(stderr, "devstack: %v\n", err)
		return 2
	}
	cfg.Out = stdout
	if reset {
		if err := Reset(ctx, cfg); err != nil {
			fmt.Fprintf(stderr, "devstack: reset: %s\n", message(err))
			return 1
		}
		return 0
	}
	st, err := New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "devstack: %s\n", message(err))
		return 2
	}
	if err := st.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "devstack: %s\n", message(err))
		return 1
	}
	return 0
}

// message is err's text for the user, without the package's "stack: "
// prefix on each line.
func message(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "stack: ")
	}
	return strings.Join(lines, "\n")
}

// configFromEnv is the one place devstack reads its environment.
func configFromEnv(environ []string) (Config, error) {
	getenv := func(name, def string) string {
		if v := lookupEnv(environ, name); v != "" {
			return v
		}
		return def
	}
	wd, err := os.Getwd()
	if err != nil {
		return Config{}, err
	}
	dataDir, err := filepath.Abs(getenv("DEVSTACK_DATA_DIR", filepath.Join(wd, ".data")))
	if err != nil {
		return Config{}, err
	}
	exe, err := os.Executable()
	if err != nil {
		return Config{}, err
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	port, fallback := DefaultNATSPort, true
	if v := lookupEnv(environ, "DEVSTACK_NATS_PORT"); v != "" {
		if port, err = strconv.Atoi(v); err != nil || port < 0 || port > 65535 {
			return Config{}, fmt.Errorf("DEVSTACK_NATS_PORT: %q is not a port", v)
		}
		fallback = false
	}
	blobURL := &url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(dataDir, "blobs")), RawQuery: "create_dir=true"}
	return Config{
		DataDir:          dataDir,
		NATSHost:         "127.0.0.1",
		NATSPort:         port,
		NATSPortFallback: fallback,
		DatabaseURL:      lookupEnv(environ, "DATABASE_URL"),
		PostgresAddr:     DefaultPostgresAddr,
		Database:         DefaultDatabase,
		BlobURL:          getenv("BLOB_URL", blobURL.String()),
		BinDir:           getenv("DEVSTACK_BIN_DIR", filepath.Dir(exe)),
		Services:         DefaultServices(),
		Env:              environ,
	}, nil
}
