package buildinfo_test

import (
	"runtime/debug"
	"testing"

	"github.com/blobref/blobref/pkg/step/stepservice/buildinfo"
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
