package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Two test processes installing the same tool at once (each with its own
// cachedTool, as each process has) both get the one whole copy, and a later
// process builds nothing. A tool is a file (a Go binary) or a directory (an
// npm prefix), and the second rename of a directory fails where a file's
// replaces: both end the same.
func TestCachedToolInstallsOncePerMachine(t *testing.T) {
	for _, kind := range []string{"file", "dir"} {
		t.Run(kind, func(t *testing.T) {
			t.Setenv("XDG_CACHE_HOME", t.TempDir())
			started, release := make(chan struct{}), make(chan struct{})
			fills := 0
			var mu sync.Mutex
			tool := func(content string) *cachedTool {
				return &cachedTool{name: "tool-v1", what: "installing tool", duration: "no time", fill: func(tmp string) (string, error) {
					mu.Lock()
					fills++
					mu.Unlock()
					started <- struct{}{}
					<-release // both fills are under way before either renames
					if kind == "file" {
						p := filepath.Join(tmp, "tool")
						return p, os.WriteFile(p, []byte(content), 0o755)
					}
					return tmp, os.WriteFile(filepath.Join(tmp, "content"), []byte(content), 0o644)
				}}
			}

			var wg sync.WaitGroup
			paths, errs := make([]string, 2), make([]error, 2)
			for i, content := range []string{"first", "second"} {
				wg.Go(func() { paths[i], errs[i] = tool(content).get() })
			}
			<-started
			<-started
			close(release)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("process %d: %v", i, err)
				}
			}
			if paths[0] != paths[1] {
				t.Fatalf("paths: got %s and %s, want one", paths[0], paths[1])
			}
			content := paths[0]
			if kind == "dir" {
				content = filepath.Join(paths[0], "content")
			}
			if b, err := os.ReadFile(content); err != nil || (string(b) != "first" && string(b) != "second") {
				t.Errorf("installed tool: got %q (%v), want one whole copy", b, err)
			}
			entries, err := os.ReadDir(filepath.Dir(paths[0]))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, []string{"tool-v1"}) {
				t.Errorf("cache directory: got %v, want only tool-v1 (no temporary directory left)", names)
			}

			again, err := tool("third").get()
			if err != nil || again != paths[0] || fills != 2 {
				t.Errorf("a later process: got %s, %v after %d fills; want %s with no fill", again, err, fills, paths[0])
			}
		})
	}
}

// A tool that cannot be installed fails with what was being installed and
// why, and leaves nothing behind.
func TestCachedToolFailureSaysWhat(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	tool := &cachedTool{name: "tool-v1", what: "installing tool@v1 with npm", duration: "no time",
		fill: func(string) (string, error) { return "", errors.New("npm is not on PATH (install it)") }}
	_, err := tool.get()
	if err == nil || !strings.Contains(err.Error(), "installing tool@v1 with npm") || !strings.Contains(err.Error(), "npm is not on PATH") {
		t.Fatalf("got %v, want the error to say what was installed and why it failed", err)
	}
	entries, _ := os.ReadDir(filepath.Join(os.Getenv("XDG_CACHE_HOME"), "blobref"))
	if len(entries) != 0 {
		t.Errorf("cache directory after a failure: got %v, want it empty", entries)
	}
}
