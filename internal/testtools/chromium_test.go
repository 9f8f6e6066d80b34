package testtools

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Chromium takes the browser $BLOBREF_CHROMIUM names, and fails, naming
// the variable, when it names nothing.
func TestChromiumFromEnv(t *testing.T) {
	browser := filepath.Join(t.TempDir(), "chrome")
	if err := os.WriteFile(browser, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ChromiumEnv, browser)
	if got, err := Chromium(context.Background(), io.Discard); got != browser || err != nil {
		t.Errorf("with %s set: got %q, %v, want %s", ChromiumEnv, got, err, browser)
	}
	t.Setenv(ChromiumEnv, browser+"-missing")
	if _, err := Chromium(context.Background(), io.Discard); err == nil || !strings.Contains(err.Error(), ChromiumEnv+"=") {
		t.Errorf("with %s naming nothing: got %v, want an error naming it", ChromiumEnv, err)
	}
}
