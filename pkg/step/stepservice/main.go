package stepservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/blobref/blobref/pkg/step/failpoint"
	"github.com/blobref/blobref/pkg/step/stepservice/buildinfo"
)

// NewLogger returns the structured logger a service logs with.
func NewLogger(c *Config, service string) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(c.LogLevel)))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if c.LogFormat == "text" {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	return slog.New(h).With("service", service)
}

// Main runs a service: it loads cfg from the environment, arms failpoints,
// runs run under a context cancelled by SIGINT or SIGTERM, and exits
// non-zero when run fails. A signal that stops run while it starts
// (migrating, waiting for Postgres or NATS) is a stop, not a failure: the
// service exits 0. A service's main is one call to Main.
//
// A service takes no arguments but --version, which prints how it was built,
// and -h, which says where its settings come from.
func Main[C interface {
	Validator
	Common() *Config
}](name string, cfg C, run func(ctx context.Context, cfg C, log *slog.Logger) error) {
	if len(os.Args) > 1 {
		os.Exit(arguments(name, os.Args[1:]))
	}
	if err := Load(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	common := cfg.Common()
	log := NewLogger(common, name)
	if err := failpoint.Enable(common.Failpoints); err != nil {
		log.Error("bad failpoints", "error", err)
		os.Exit(2)
	}
	if common.Failpoints != "" {
		log.Warn("failpoints armed", "failpoints", common.Failpoints)
	}
	if common.GOGC == "" {
		startHeapFloor(uint64(common.GCMinHeap)) // #nosec G115 -- validated: 0 or 4 MiB to 16 GiB
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Stopped while it started (migrating, or waiting for a
			// dependency): asked to stop, it did; that is no failure.
			log.Info("stopped while starting", "interrupted", err.Error())
			return
		}
		log.Error("exiting", "error", err)
		stop()
		os.Exit(1)
	}
	log.Info("stopped")
}

// arguments answers a service's command line, which only asks for its
// version or its usage, and returns the exit status.
func arguments(name string, args []string) int {
	switch {
	case len(args) == 1 && buildinfo.IsVersionFlag(args[0]):
		fmt.Println(buildinfo.Version(name))
		return 0
	case len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help"):
		fmt.Printf("usage: %s [--version]\n\n%s reads its settings from the environment (NATS_URL, DATABASE_URL,\n"+
			"METRICS_ADDR, CONSUMER_*, ...): see its documentation.\n", name, name)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q: it takes only --version or -h, and reads its settings from the environment\n", name, args)
		return 2
	}
}
