package buildinfo_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/blobref/blobref/internal/testenv"
)

// Every blobref binary answers --version with its build information, with
// the revision of the checkout
// when the go command can stamp one (a Git worktree it cannot).
func TestBinariesAnswerVersion(t *testing.T) {
	t.Parallel()
	binaries := map[string]string{
		"ingest":     "services/ingest",
		"blobwriter": "services/blobwriter",
		"refwriter":  "services/refwriter",
		"devstack":   "tools/devstack",
		"blobrefctl": "tools/blobrefctl",
		"torture":    "tools/torture",
	}
	dir := t.TempDir()
	var paths []string
	for _, p := range binaries {
		paths = append(paths, p)
	}
	// As the other tests build them (with -race under -race), to share
	// their build cache.
	if err := testenv.Build(dir, paths...); err != nil {
		t.Fatal(err)
	}

	revision := "no VCS revision"
	if root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output(); err == nil {
		if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(root)), ".git")); err == nil && fi.IsDir() {
			head, err := exec.Command("git", "rev-parse", "HEAD").Output()
			if err != nil {
				t.Fatal(err)
			}
			revision = "revision " + strings.TrimSpace(string(head)) + " ("
		}
	}
	for name := range binaries {
		out, err := exec.Command(filepath.Join(dir, name), "--version").CombinedOutput()
		if err != nil {
			t.Errorf("%s --version: %v\n%s", name, err, out)
			continue
		}
		line := strings.TrimSpace(string(out))
		want := regexp.MustCompile(`^` + name + ` \S+, ` + regexp.QuoteMeta(revision) + `.*, go1\.\S+ ` + runtime.GOOS + "/" + runtime.GOARCH + `$`)
		if !want.MatchString(line) {
			t.Errorf("%s --version: got %q, want a line matching %s", name, line, want)
		}
	}

	// The services take no other argument but -h: one they do not know
	// stops them, rather than being ignored.
	for _, name := range []string{"ingest", "blobwriter", "refwriter"} {
		if out, err := exec.Command(filepath.Join(dir, name), "-h").CombinedOutput(); err != nil || !strings.Contains(string(out), "usage: "+name+" [--version]") {
			t.Errorf("%s -h: %v, %q; want exit 0 and its usage", name, err, out)
		}
		out, err := exec.Command(filepath.Join(dir, name), "--port", "9").CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "unexpected arguments") {
			t.Errorf("%s --port 9: %v, %q; want exit 2 and unexpected arguments", name, err, out)
		}
	}
}
