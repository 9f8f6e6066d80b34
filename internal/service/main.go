package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/blobref/blobref/internal/failpoint"
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
// non-zero when run fails. A service's main is one call to Main.
func Main[C interface {
	Validator
	Common() *Config
}](name string, cfg C, run func(ctx context.Context, cfg C, log *slog.Logger) error) {
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("exiting", "error", err)
		stop()
		os.Exit(1)
	}
	log.Info("stopped")
}
