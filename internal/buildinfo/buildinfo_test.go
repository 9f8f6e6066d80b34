package buildinfo_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/blobref/blobref/internal/buildinfo"
	"github.com/blobref/blobref/internal/testenv"
)

func TestFormat(t *testing.T) {
	t.Parallel()
	settings := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{
			"clean checkout",
			debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.0.0-20260405100000-76e415eec7fc"},
				Settings: settings("GOOS", "linux", "GOARCH", "arm64", "vcs.revision", "76e415eec7fcceefcb3d3397d9ea47947742e7fd",
					"vcs.time", "2026-04-05T10:00:00Z", "vcs.modified", "false")},
			"ingest v0.0.0-20260405100000-76e415eec7fc, revision 76e415eec7fcceefcb3d3397d9ea47947742e7fd (2026-04-05T10:00:00Z, clean), go1.26.0 linux/arm64",
		},
		{
			"uncommitted changes",
			debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"},
				Settings: settings("GOOS", "linux", "GOARCH", "amd64", "vcs.revision", "abc", "vcs.time", "2026-04-05T10:00:00Z", "vcs.modified", "true")},
			"ingest (devel), revision abc (2026-04-05T10:00:00Z, modified), go1.26.0 linux/amd64",
		},
		{
			"no repository",
			debug.BuildInfo{GoVersion: "go1.26.0", Settings: settings("GOOS", "darwin", "GOARCH", "arm64")},
			"ingest (devel), no VCS revision, go1.26.0 darwin/arm64",
		},
	} {
		if got := buildinfo.Format("ingest", &tc.bi); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

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
}
