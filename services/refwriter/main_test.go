package main

import (
	"testing"

	"github.com/blobref/blobref/internal/service"
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
			if err := service.Load(cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.BlobURL != tc.wantURL || cfg.BlobCheck != tc.wantCheck {
				t.Errorf("got BLOB_URL %q, check %v; want %q, %v", cfg.BlobURL, cfg.BlobCheck, tc.wantURL, tc.wantCheck)
			}
		})
	}
}
