// Command notifier is the pipeline's third consumer, and its last step: it
// delivers each completed upload to its owner's webhook endpoints, signed
// as Standard Webhooks specifies (see package webhook and docs/notifier.md).
package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
	"github.com/blobref/blobref/services/notifier/internal/webhook"
)

type config struct {
	stepservice.Config
	stepservice.ConsumerConfig
	// EndpointsFile maps owners to their endpoints (JSON; see docs/notifier.md).
	EndpointsFile string `env:"NOTIFIER_ENDPOINTS_FILE" envDefault:"/etc/blobref/notifier/endpoints.json"`
	// AllowPrivate lets endpoints be loopback or private addresses: for
	// tests and a receiver on the same network, never for owners' URLs.
	AllowPrivate bool `env:"NOTIFIER_ALLOW_PRIVATE"`
	// Timeout bounds one attempt at one endpoint.
	Timeout time.Duration `env:"NOTIFIER_TIMEOUT" envDefault:"15s"`
}

// defaults is the configuration before the environment is read: receivers
// get a longer back-off than the pipeline's own steps (25 deliveries over
// about 14 hours).
func defaults() *config {
	return &config{
		Config:         stepservice.Config{MetricsAddr: ":9103"},
		ConsumerConfig: stepservice.ConsumerConfig{BackoffMax: time.Hour, MaxDeliveries: 25},
	}
}

func (c *config) Validate() error {
	var errs []error
	if c.EndpointsFile == "" {
		errs = append(errs, errors.New("config: NOTIFIER_ENDPOINTS_FILE: must be set"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("config: NOTIFIER_TIMEOUT: must be positive"))
	}
	return errors.Join(append(errs, c.Config.Validate(), c.ConsumerConfig.Validate())...)
}

func main() {
	stepservice.Main("notifier", defaults(), run)
}

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	eps, err := webhook.LoadEndpoints(cfg.EndpointsFile, cfg.AllowPrivate)
	if err != nil {
		return err
	}
	log.Info("webhook endpoints", "endpoints", eps.Len(), "allow_private", cfg.AllowPrivate)
	client := webhook.NewClient(cfg.Timeout, cfg.AllowPrivate)
	return stepservice.Run(ctx, "notifier", &cfg.Config, &cfg.ConsumerConfig, log,
		func(d stepservice.Deps) (step.Step[webhook.Result], error) {
			n := &webhook.Notifier{Endpoints: eps, Client: client, Pool: d.Pool, Log: d.Log}
			return n.Step(), nil
		},
		stepservice.WithMigrate(webhook.Migrate))
}
