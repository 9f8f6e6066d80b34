package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// A cachedTool is a server a test runs that is not part of blobref (a
// storage emulator), built or installed on demand into the user's cache
// directory (~/.cache/blobref/<name>) once per machine.
type cachedTool struct {
	name     string // under the cache directory, with its pinned version
	what     string // what is built or installed, for the message
	duration string // how long it took here on a cold machine, for the message
	// fill builds or installs the tool into the empty directory tmp and
	// returns the path, inside tmp, to rename to the tool's name.
	fill func(tmp string) (string, error)

	once sync.Once
	path string
	err  error
}

// get returns the tool's path in the cache, building it the first time.
// Test processes building at once each fill a temporary directory of their
// own beside it and rename the result into place: one rename wins and every
// test finds a whole tool.
func (c *cachedTool) get() (string, error) {
	c.once.Do(func() { c.path, c.err = c.install() })
	return c.path, c.err
}

func (c *cachedTool) install() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("testenv: no cache directory for %s: %w", c.name, err)
	}
	dir := filepath.Join(cache, "blobref")
	path := filepath.Join(dir, c.name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	removeStale(dir, "."+c.name+"-")
	tmp, err := os.MkdirTemp(dir, "."+c.name+"-*")
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // it may become the tool's directory
		return "", fmt.Errorf("testenv: %w", err)
	}

	fmt.Fprintf(os.Stderr, "testenv: %s into %s, once per machine (it took %s here)\n", c.what, path, c.duration)
	start := time.Now()
	built, err := c.fill(tmp)
	if err != nil {
		return "", fmt.Errorf("testenv: %s: %w", c.what, err)
	}
	if err := os.Rename(built, path); err != nil {
		// Another test process renamed its copy first: use that one.
		if _, statErr := os.Stat(path); statErr == nil {
			return path, nil
		}
		return "", fmt.Errorf("testenv: %w", err)
	}
	fmt.Fprintf(os.Stderr, "testenv: %s took %s\n", c.name, time.Since(start).Round(time.Second))
	return path, nil
}

// removeStale removes the temporary directories that builds interrupted
// more than a day ago left behind (a build takes minutes, not days).
func removeStale(dir, prefix string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < 24*time.Hour {
			continue
		}
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}
