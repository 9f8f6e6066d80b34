package main

import (
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/pkg/step/stepservice"
)

// The notifier's defaults: its own back-off for receivers, the runtime's
// for the rest; the environment overrides them and bad values are named.
func TestConfig(t *testing.T) {
	cfg := defaults()
	if err := stepservice.Load(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.BackoffMax != time.Hour || cfg.MaxDeliveries != 25 || cfg.BackoffBase != time.Second ||
		cfg.Timeout != 15*time.Second || cfg.AllowPrivate || cfg.EndpointsFile != "/etc/blobref/notifier/endpoints.json" ||
		cfg.MetricsAddr != ":9103" {
		t.Errorf("defaults: got %+v", cfg)
	}
	t.Setenv("CONSUMER_MAX_DELIVERIES", "4")
	t.Setenv("NOTIFIER_ALLOW_PRIVATE", "true")
	cfg = defaults()
	if err := stepservice.Load(cfg); err != nil || cfg.MaxDeliveries != 4 || !cfg.AllowPrivate {
		t.Errorf("set: got %d, %v (%v); want 4, true", cfg.MaxDeliveries, cfg.AllowPrivate, err)
	}
	t.Setenv("NOTIFIER_TIMEOUT", "0s")
	if err := stepservice.Load(defaults()); err == nil || !strings.Contains(err.Error(), "NOTIFIER_TIMEOUT") {
		t.Errorf("NOTIFIER_TIMEOUT=0s: got %v, want an error naming it", err)
	}
}
