// Package service is what blobref's services share beyond the step
// runtime's service harness (package stepservice): the configuration of
// `blobrefctl setup` and of the staging bucket, and blobref's schema. The
// rest forwards to stepservice, where it moved, until every service imports
// it from there.
package service

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/internal/steprun"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

// Moved to package stepservice.
type (
	Config         = stepservice.Config
	NATSConfig     = stepservice.NATSConfig
	ConsumerConfig = stepservice.ConsumerConfig
	Validator      = stepservice.Validator
	Check          = stepservice.Check
	Ops            = stepservice.Ops
	Deps           = stepservice.Deps
)

// Moved to package stepservice.
const (
	SetupAuto = stepservice.SetupAuto
	SetupOff  = stepservice.SetupOff
)

// Moved to package stepservice.
var (
	DefaultInboxPrefix = stepservice.DefaultInboxPrefix
	Load               = stepservice.Load
	NewLogger          = stepservice.NewLogger
	ConnectNATS        = stepservice.ConnectNATS
	SetUpStreams       = stepservice.SetUpStreams
	NewPool            = stepservice.NewPool
	Retry              = stepservice.Retry
	NATSCheck          = stepservice.NATSCheck
	PostgresCheck      = stepservice.PostgresCheck
	NewRegistry        = stepservice.NewRegistry
)

// Main is stepservice.Main.
func Main[C interface {
	Validator
	Common() *Config
}](name string, cfg C, run func(ctx context.Context, cfg C, log *slog.Logger) error) {
	stepservice.Main(name, cfg, run)
}

// OpenPostgres opens a pool and applies blobref's migrations (dbschema),
// as stepservice.OpenPostgres does with them.
func OpenPostgres(ctx context.Context, url string, minConns int32, log *slog.Logger) (*pgxpool.Pool, error) {
	return stepservice.OpenPostgres(ctx, url, minConns, dbschema.Migrate, log)
}

// RunStep is stepservice.Run with blobref's migrations, for a step of
// steprun's shape.
func RunStep[R any](ctx context.Context, name string, cfg *Config, cc *ConsumerConfig, log *slog.Logger,
	build func(Deps) (steprun.Step[R], error)) error {
	return stepservice.Run(ctx, name, cfg, cc, log, func(d Deps) (step.Step[R], error) {
		s, err := build(d)
		return s.Step(), err
	}, stepservice.WithMigrate(dbschema.Migrate))
}
