package main

import (
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/pkg/step/stepservice"
)

// BLOB_CHECK=false turns the bucket check off; by default the blob is
// checked in BLOB_URL, whose default applies even when it is set empty.
func TestBlobCheck(t *testing.T) {
	const def = "file:///var/lib/blobref/blobs?create_dir=true"
	for _, tc := range []struct {
		name      string
		env       map[string]string
		wantURL   string
		wantCheck bool
	}{
		{"defaults", nil, def, true},
		{"empty url", map[string]string{"BLOB_URL": ""}, def, true},
		{"mem", map[string]string{"BLOB_URL": "mem://"}, "mem://", true},
		{"off", map[string]string{"BLOB_CHECK": "false"}, def, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg := defaults()
			if err := stepservice.Load(cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.BlobURL != tc.wantURL || cfg.BlobCheck != tc.wantCheck {
				t.Errorf("got BLOB_URL %q, check %v; want %q, %v", cfg.BlobURL, cfg.BlobCheck, tc.wantURL, tc.wantCheck)
			}
		})
	}
}

// The blob key prefix and the clock skew have defaults, and the skew must be
// positive.
func TestKeyPrefixAndClockSkew(t *testing.T) {
	cfg := defaults()
	if err := stepservice.Load(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.BlobKeyPrefix != "uploads/" || cfg.MaxClockSkew != 5*time.Minute {
		t.Errorf("defaults: BLOB_KEY_PREFIX %q, MAX_CLOCK_SKEW %v; want uploads/, 5m", cfg.BlobKeyPrefix, cfg.MaxClockSkew)
	}
	t.Setenv("BLOB_KEY_PREFIX", "blobs/")
	t.Setenv("MAX_CLOCK_SKEW", "1m")
	cfg = defaults()
	if err := stepservice.Load(cfg); err != nil || cfg.BlobKeyPrefix != "blobs/" || cfg.MaxClockSkew != time.Minute {
		t.Errorf("set: got %q %v (%v), want blobs/, 1m", cfg.BlobKeyPrefix, cfg.MaxClockSkew, err)
	}
	t.Setenv("MAX_CLOCK_SKEW", "0s")
	if err := stepservice.Load(defaults()); err == nil || !strings.Contains(err.Error(), "MAX_CLOCK_SKEW") {
		t.Errorf("MAX_CLOCK_SKEW=0s: got %v, want an error naming it", err)
	}
}
