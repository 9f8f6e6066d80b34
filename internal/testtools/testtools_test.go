package testtools

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(racerEnv); dir != "" {
		os.Exit(racer(dir))
	}
	goleak.VerifyTestMain(m)
}

// fakeTool is a tool whose install writes a shell script, counting its
// installs.
func fakeTool(name string, fills *atomic.Int32) *tool {
	return &tool{
		name: name, env: "TESTTOOLS_" + strings.ToUpper(name), onPath: name, took: "no time",
		version: pinned("v1"), entry: name, how: func(v string) string { return "writing " + name + "@" + v },
		fill: func(_ context.Context, tmp, _ string) (string, error) {
			fills.Add(1)
			p := filepath.Join(tmp, name)
			return p, os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
		},
	}
}

func writeExe(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// find takes the variable's binary, then the cached one, then one on PATH,
// and installs the tool into the cache when there is none.
func TestFind(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	var fills atomic.Int32
	tl := fakeTool("tool", &fills)
	fromEnv, onPath := writeExe(t, filepath.Join(dir, "env", "tool")), writeExe(t, filepath.Join(dir, "path", "tool"))
	cached := filepath.Join(dir, "cache", "blobref", "tool-v1")
	t.Setenv("PATH", filepath.Dir(onPath))

	t.Setenv("TESTTOOLS_TOOL", fromEnv)
	if got, err := tl.find(); got != fromEnv || err != nil {
		t.Errorf("with the variable set: got %q, %v, want %s", got, err, fromEnv)
	}
	t.Setenv("TESTTOOLS_TOOL", filepath.Join(dir, "missing"))
	if _, err := tl.find(); err == nil || !strings.Contains(err.Error(), "TESTTOOLS_TOOL=") {
		t.Errorf("with the variable naming nothing: got %v, want an error naming it", err)
	}
	t.Setenv("TESTTOOLS_TOOL", "")
	if got, err := tl.find(); got != onPath || err != nil {
		t.Errorf("on PATH: got %q, %v, want %s", got, err, onPath)
	}
	t.Setenv("PATH", "")
	if got, err := tl.find(); got != cached || err != nil || fills.Load() != 1 {
		t.Errorf("nowhere: got %q, %v after %d installs, want %s installed once", got, err, fills.Load(), cached)
	}
	t.Setenv("PATH", filepath.Dir(onPath))
	if got, err := tl.find(); got != cached || err != nil || fills.Load() != 1 {
		t.Errorf("cached: got %q, %v after %d installs, want %s, before PATH, with no new install", got, err, fills.Load(), cached)
	}
}

// Install reports each tool as cached or installed with how long it took,
// installs every tool it can when one fails, and returns that failure
// naming the tool, what it did and why.
func TestInstallReports(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	var fills atomic.Int32
	cached, fresh, broken := fakeTool("cached", &fills), fakeTool("fresh", &fills), fakeTool("broken", &fills)
	broken.fill = func(context.Context, string, string) (string, error) {
		return "", errors.New("npm is not on PATH (install it)")
	}
	e, err := cached.resolve()
	if err != nil {
		t.Fatal(err)
	}
	writeExe(t, e.exe)

	var out bytes.Buffer
	err = install(context.Background(), &out, []*tool{cached, fresh, broken})
	if err == nil || !strings.Contains(err.Error(), "broken v1: writing broken@v1") || !strings.Contains(err.Error(), "npm is not on PATH") {
		t.Errorf("got %v, want the error to name the tool, what it did and why it failed", err)
	}
	for _, want := range []string{
		"  cached v1: cached (" + e.exe + ")",
		"  fresh v1: writing fresh@v1 into ",
		"  fresh v1: installed in ",
		"  broken v1: failed after ",
		"test tools: failed after ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if f, _ := fresh.resolve(); !exists(f.exe) || fills.Load() != 1 {
		t.Errorf("fresh: installed %v after %d installs, want installed once despite the failure", exists(f.exe), fills.Load())
	}
	if b, _ := broken.resolve(); exists(b.path) {
		t.Errorf("broken: %s exists after a failed install", b.path)
	}
	if names := cacheEntries(t); !slices.Equal(names, []string{"cached-v1", "fresh-v1"}) {
		t.Errorf("cache: got %v, want only the two tools (no temporary directory left)", names)
	}

	out.Reset()
	if err := install(context.Background(), &out, []*tool{cached, fresh}); err != nil || !strings.Contains(out.String(), "test tools ready in ") {
		t.Errorf("again: got %v\n%s\nwant the tools ready", err, out.String())
	}
	if fills.Load() != 1 {
		t.Errorf("again: %d installs, want none more", fills.Load())
	}
}

// cacheEntries lists the cache directory but for the lock files.
func cacheEntries(t *testing.T) []string {
	t.Helper()
	dir, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".lock-") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names
}

// Path knows every tool by its binary's name, and says which there are
// when asked for another.
func TestPathNamesTheTools(t *testing.T) {
	for name, tl := range byName {
		if e, err := tl.resolve(); err != nil || filepath.Base(e.exe) != name && !strings.HasPrefix(filepath.Base(e.exe), name+"-") {
			t.Errorf("%s: the binary is %s (%v)", name, e.exe, err)
		}
	}
	for _, tl := range all {
		if !slices.Contains(slices.Collect(maps.Values(byName)), tl) {
			t.Errorf("%s: not known to Path", tl.name)
		}
	}
	if _, err := Path("nope"); err == nil || !strings.Contains(err.Error(), "gosec, govulncheck, minio") {
		t.Errorf("Path(nope): got %v, want an error listing the tools", err)
	}
}

// Every tool has what Install and find need, and a cache entry of its own.
func TestToolsAreComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, tl := range slices.Collect(maps.Values(byName)) {
		if tl.name == "" || tl.took == "" || tl.version == nil || tl.entry == "" || tl.how == nil || tl.fill == nil {
			t.Errorf("%q: incomplete: %+v", tl.name, tl)
		}
		if seen[tl.entry] {
			t.Errorf("%q: entry %q is another tool's", tl.name, tl.entry)
		}
		seen[tl.entry] = true
	}
	if len(all) != 5 {
		t.Errorf("got %d tools, want 5: MinIO, the NATS CLI, nats-server, fake-gcs-server and Azurite", len(all))
	}
}

// racerEnv, when set, makes the test binary a racer: a process that finds
// (and so installs) the racing tool into the cache of its XDG_CACHE_HOME.
const racerEnv = "TESTTOOLS_RACER_DIR"

// racer finds the racing tool, whose install records itself in dir/fills
// and then waits for dir/release, and prints the tool's path.
func racer(dir string) int {
	tl := &tool{
		name: "racer", took: "no time", version: pinned("v1"), entry: "racer", exe: "racer",
		how: func(string) string { return "writing racer" },
		fill: func(_ context.Context, tmp, _ string) (string, error) {
			f, err := os.OpenFile(filepath.Join(dir, "fills"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return "", err
			}
			_, err = f.WriteString("fill\n")
			f.Close()
			if err != nil {
				return "", err
			}
			for deadline := time.Now().Add(time.Minute); !exists(filepath.Join(dir, "release")); {
				if time.Now().After(deadline) {
					return "", errors.New("no release within a minute")
				}
				time.Sleep(10 * time.Millisecond)
			}
			// A directory entry: the harder case, as a second rename of a
			// directory fails where a file's replaces.
			return tmp, os.WriteFile(filepath.Join(tmp, "racer"), []byte("whole"), 0o755)
		},
	}
	p, err := tl.find()
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	os.Stdout.WriteString(p + "\n")
	return 0
}

// Two test processes that need the tool at once: one installs it while
// the other waits, saying so, and then both use that one whole copy; a
// later process installs nothing.
func TestInstallOncePerMachineWhenProcessesRace(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	type proc struct {
		cmd    *exec.Cmd
		out    bytes.Buffer
		stderr *watchWriter
	}
	procs := make([]*proc, 2)
	waiting := make(chan int, 2)
	for i := range procs {
		p := &proc{cmd: exec.Command(os.Args[0], "-test.run=^$")}
		p.cmd.Env = append(os.Environ(), racerEnv+"="+dir)
		p.stderr = &watchWriter{match: "waiting for another process", matched: func() { waiting <- i }}
		p.cmd.Stdout, p.cmd.Stderr = &p.out, p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	select {
	case i := <-waiting:
		t.Logf("process %d waits for the other", i)
	case <-time.After(time.Minute):
		t.Fatal("neither process waited for the other within a minute")
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", i, err, p.stderr.String())
		}
		paths = append(paths, strings.TrimSpace(p.out.String()))
	}
	want := filepath.Join(cache, "blobref", "racer-v1", "racer")
	if paths[0] != want || paths[1] != want {
		t.Errorf("paths: got %q, want %s for both", paths, want)
	}
	if b, err := os.ReadFile(want); string(b) != "whole" {
		t.Errorf("the tool: got %q, %v, want the whole copy", b, err)
	}
	if fills, _ := os.ReadFile(filepath.Join(dir, "fills")); string(fills) != "fill\n" {
		t.Errorf("installs: got %q, want one", fills)
	}
	if names := cacheEntries(t); !slices.Equal(names, []string{"racer-v1"}) {
		t.Errorf("cache: got %v, want only racer-v1 (no temporary directory left)", names)
	}

	later := exec.Command(os.Args[0], "-test.run=^$")
	later.Env = append(os.Environ(), racerEnv+"="+dir)
	if out, err := later.Output(); err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("a later process: got %q, %v, want %s", out, err, want)
	}
	if fills, _ := os.ReadFile(filepath.Join(dir, "fills")); string(fills) != "fill\n" {
		t.Errorf("installs after a later process: got %q, want still one", fills)
	}
}

// watchWriter keeps what is written and calls matched once when it first
// contains match.
type watchWriter struct {
	match   string
	matched func()

	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.match) {
		w.done = true
		w.matched()
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
