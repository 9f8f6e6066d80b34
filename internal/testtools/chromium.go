package testtools

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// ChromiumEnv names a Chromium (or Chrome) binary to use instead of the
// one Chromium finds.
const ChromiumEnv = "BLOBREF_CHROMIUM"

// ChromiumPackage is the Debian package the browser tests run.
const ChromiumPackage = "chromium"

// chromiumNames are the names a Chromium binary goes by on PATH.
var chromiumNames = []string{"chromium", "chromium-browser"}

// chromiumHint says how to get a browser when Chromium finds none and may
// not install one.
const chromiumHint = "install Debian's chromium package (as root: apt-get install -y chromium), " +
	"or set " + ChromiumEnv + " to a Chromium or Chrome binary"

// Chromium returns the headless browser the console's tests drive:
// $BLOBREF_CHROMIUM, /usr/bin/chromium or chromium on PATH. When there is
// none and the process runs as root on a machine with apt-get, it installs
// Debian's chromium package (apt-get update, then apt-get install -y
// chromium), saying so on w; one process at a time installs, the others
// wait. Otherwise it fails, saying how to install it: it never lets a test
// skip for want of a browser.
func Chromium(ctx context.Context, w io.Writer) (string, error) {
	if p, err := findChromium(); p != "" || err != nil {
		return p, err
	}
	apt, err := exec.LookPath("apt-get")
	if err != nil || os.Geteuid() != 0 {
		return "", fmt.Errorf("testtools: no Chromium: none at /usr/bin/chromium, none on PATH and %s is not set; %s", ChromiumEnv, chromiumHint)
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("testtools: %w", err)
	}
	unlock, err := lock(filepath.Join(dir, ".lock-chromium"), func() {
		fmt.Fprintf(w, "  Chromium: waiting for another process that installs it\n")
	})
	if err != nil {
		return "", err
	}
	defer unlock()
	if p, err := findChromium(); p != "" || err != nil { // installed while we waited
		return p, err
	}
	start := time.Now()
	fmt.Fprintf(w, "  Chromium: no browser found; installing Debian's %s package with apt-get (once per machine, a minute or two)\n", ChromiumPackage)
	for _, args := range [][]string{
		{"update"},
		{"install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", ChromiumPackage},
	} {
		cmd := exec.CommandContext(ctx, apt, args...) // #nosec G204 -- apt-get from PATH, installing the pinned package name
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("testtools: apt-get %s: %w (%s)\n%s", args[0], err, chromiumHint, tail(out, 4096))
		}
	}
	p, err := findChromium()
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", fmt.Errorf("testtools: apt-get installed %s, yet no chromium binary is on PATH; %s", ChromiumPackage, chromiumHint)
	}
	fmt.Fprintf(w, "  Chromium: installed in %s (%s)\n", since(start), p)
	return p, nil
}

// findChromium returns the browser named by ChromiumEnv, /usr/bin/chromium
// or one on PATH, "" when there is none, and an error when ChromiumEnv
// names nothing runnable.
func findChromium() (string, error) {
	if p := os.Getenv(ChromiumEnv); p != "" {
		if _, err := os.Stat(p); err != nil { // #nosec G703 -- the variable names the browser its user chose to run
			return "", fmt.Errorf("testtools: %s=%s: %w", ChromiumEnv, p, err)
		}
		return p, nil
	}
	if fi, err := os.Stat("/usr/bin/chromium"); err == nil && !fi.IsDir() {
		return "/usr/bin/chromium", nil
	}
	for _, name := range chromiumNames {
		p, err := exec.LookPath(name)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("testtools: %s: %w", name, err)
		}
	}
	return "", nil
}

// tail returns the last n bytes of out.
func tail(out []byte, n int) []byte {
	if len(out) > n {
		return out[len(out)-n:]
	}
	return out
}
