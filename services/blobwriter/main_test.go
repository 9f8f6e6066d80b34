package main

import (
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/pkg/step/stepservice"
)

func load(t *testing.T, env map[string]string) (*config, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg := &config{}
	return cfg, stepservice.Load(cfg)
}

// The staging bucket and the clock skew have the defaults ingest and
// refwriter use, and bad values are named.
func TestStagingBucketAndClockSkew(t *testing.T) {
	cfg, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StagingBucket != "uploads-staging" || cfg.MaxClockSkew != 5*time.Minute {
		t.Errorf("defaults: STAGING_BUCKET %q, MAX_CLOCK_SKEW %v; want uploads-staging, 5m", cfg.StagingBucket, cfg.MaxClockSkew)
	}
	for name, value := range map[string]string{"STAGING_BUCKET": "uploads.staging", "MAX_CLOCK_SKEW": "-1m"} {
		t.Run(name, func(t *testing.T) {
			if _, err := load(t, map[string]string{name: value}); err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%s: got %v, want an error naming it", name, value, err)
			}
		})
	}
}
