package buildinfo_test

import (
	debugbuildinfo "debug/buildinfo"
	"errors"
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

	// The go command stamps the checkout's revision unless it cannot (no
	// Git, a worktree) or is told not to (-buildvcs=false, which some
	// machines set in GOFLAGS): what the binary must say follows what it
	// carries, and what it carries must be this checkout's HEAD.
	head := ""
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		head = strings.TrimSpace(string(out))
	}
	for name := range binaries {
		out, err := exec.Command(filepath.Join(dir, name), "--version").CombinedOutput()
		if err != nil {
			t.Errorf("%s --version: %v\n%s", name, err, out)
			continue
		}
		info, err := debugbuildinfo.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		revision := "no VCS revision"
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				if s.Value != head {
					t.Errorf("%s carries revision %s, the checkout is at %q", name, s.Value, head)
				}
				revision = "revision " + s.Value + " ("
			}
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
