package testtools

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Install makes sure the cache holds every tool the tests run (MinIO,
// the NATS CLI, nats-server, fake-gcs-server, Azurite), installing the
// missing ones side by side, and says on w what it does and how long each
// took. It must run inside the workspace (nats-server's version comes from
// go.work). It installs every tool it can and returns the failures
// together.
func Install(ctx context.Context, w io.Writer) error { return install(ctx, w, all) }

func install(ctx context.Context, w io.Writer, tools []*tool) error {
	dir, err := CacheDir()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "test tools in %s, each installed once per version:\n", dir)
	start := time.Now()
	var errs []error
	var missing []func() error
	sw := &syncWriter{w: w}
	for _, t := range tools {
		e, err := t.resolve()
		switch {
		case err != nil:
			fmt.Fprintf(w, "  %s: %v\n", t.name, err)
			errs = append(errs, err)
		case exists(e.exe):
			fmt.Fprintf(w, "  %s: cached (%s)\n", e.label, e.exe)
		default:
			missing = append(missing, func() error { return t.ensure(ctx, e, sw) })
		}
	}
	// Side by side: the downloads of one overlap the builds of another.
	results := make([]error, len(missing))
	var wg sync.WaitGroup
	for i, ensure := range missing {
		wg.Go(func() { results[i] = ensure() })
	}
	wg.Wait()
	if err := errors.Join(append(errs, results...)...); err != nil {
		fmt.Fprintf(w, "test tools: failed after %s\n", since(start))
		return err
	}
	fmt.Fprintf(w, "test tools ready in %s\n", since(start))
	return nil
}

// An entry is a version of a tool in the cache.
type entry struct {
	version string
	label   string // the tool's name and version
	path    string // the cache entry
	exe     string // the binary, path itself or inside it
}

func (t *tool) resolve() (entry, error) {
	v, err := t.version()
	if err != nil {
		return entry{}, err
	}
	dir, err := CacheDir()
	if err != nil {
		return entry{}, err
	}
	e := entry{version: v, label: t.name + " " + v, path: filepath.Join(dir, t.entry+"-"+v)}
	e.exe = e.path
	if t.exe != "" {
		e.exe = filepath.Join(e.path, t.exe)
	}
	return e, nil
}

// ensure installs the entry e of t unless it is there, saying on w what it
// does. Processes installing one entry at once take turns on a lock beside
// it (the later ones then find it installed), and it appears under its
// name whole, by a rename, never half-written.
func (t *tool) ensure(ctx context.Context, e entry, w io.Writer) error {
	dir, base := filepath.Dir(e.path), filepath.Base(e.path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("testtools: %w", err)
	}
	unlock, err := lock(filepath.Join(dir, ".lock-"+base), func() {
		fmt.Fprintf(w, "  %s: waiting for another process that installs it\n", e.label)
	})
	if err != nil {
		return err
	}
	defer unlock()
	if exists(e.exe) {
		fmt.Fprintf(w, "  %s: installed by another process (%s)\n", e.label, e.exe)
		return nil
	}
	// Left by an install that was interrupted: only lock holders make them.
	stale, _ := filepath.Glob(filepath.Join(dir, ".build-"+base+"-*"))
	for _, d := range stale {
		_ = os.RemoveAll(d)
	}
	tmp, err := os.MkdirTemp(dir, ".build-"+base+"-")
	if err != nil {
		return fmt.Errorf("testtools: %w", err)
	}
	defer os.RemoveAll(tmp)

	how := t.how(e.version)
	fmt.Fprintf(w, "  %s: %s into %s (%s)\n", e.label, how, dir, t.took)
	start := time.Now()
	built, err := t.fill(ctx, tmp, e.version)
	if err != nil {
		fmt.Fprintf(w, "  %s: failed after %s\n", e.label, since(start))
		return fmt.Errorf("testtools: %s: %s: %w", e.label, how, err)
	}
	if err := os.Rename(built, e.path); err != nil && !exists(e.exe) {
		// Where there is no lock, another process may have renamed its
		// copy first (a directory is not replaced): that one is used.
		return fmt.Errorf("testtools: %w", err)
	}
	fmt.Fprintf(w, "  %s: installed in %s (%s)\n", e.label, since(start), e.exe)
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func since(start time.Time) string { return time.Since(start).Round(100 * time.Millisecond).String() }

// syncWriter lets installs running side by side write whole lines (one
// Fprintf is one Write) to one writer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
