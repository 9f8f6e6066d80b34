package testtools

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// find takes the variable's binary, then the cached one, then one on PATH,
// and says how to get it when there is none.
func TestFind(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fromEnv, cached, onPath := write("env/tool"), write("cache/tool-v1"), write("path/tool")
	t.Setenv("PATH", filepath.Dir(onPath))

	t.Setenv("TESTTOOLS_TEST", fromEnv)
	if got, err := find("tool", "TESTTOOLS_TEST", cached, "tool"); got != fromEnv || err != nil {
		t.Errorf("with the variable set: got %q, %v, want %s", got, err, fromEnv)
	}
	t.Setenv("TESTTOOLS_TEST", filepath.Join(dir, "missing"))
	if _, err := find("tool", "TESTTOOLS_TEST", cached, "tool"); err == nil || !strings.Contains(err.Error(), "TESTTOOLS_TEST=") {
		t.Errorf("with the variable naming nothing: got %v, want an error naming it", err)
	}
	t.Setenv("TESTTOOLS_TEST", "")
	if got, err := find("tool", "TESTTOOLS_TEST", cached, "tool"); got != cached || err != nil {
		t.Errorf("cached: got %q, %v, want %s", got, err, cached)
	}
	if got, err := find("tool", "TESTTOOLS_TEST", filepath.Join(dir, "cache/tool-v2"), "tool"); got != onPath || err != nil {
		t.Errorf("on PATH: got %q, %v, want %s", got, err, onPath)
	}
	_, err := find("tool", "TESTTOOLS_TEST", filepath.Join(dir, "cache/tool-v2"), "othertool")
	if err == nil || !strings.Contains(err.Error(), "make test-tools") {
		t.Errorf("nowhere: got %v, want an error saying make test-tools builds it", err)
	}
}
