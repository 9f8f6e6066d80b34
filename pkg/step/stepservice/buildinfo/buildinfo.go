// Package buildinfo says how a blobref binary was built, for its --version:
// the module version, the VCS revision and time and whether the tree had
// uncommitted changes, and the Go toolchain, all read from the build
// information the Go linker embeds (runtime/debug.ReadBuildInfo).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the one line a binary named program prints for --version.
func Version(program string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fmt.Sprintf("%s: no build information (built without module support), %s %s/%s",
			program, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	return Format(program, bi)
}

// Format is Version's line for the build information bi, e.g.
//
//	ingest (devel), revision 76e415eec7fc (2026-04-05T10:00:00Z, modified), go1.26.0 linux/amd64
//
// A build outside a repository (a source archive, a Git worktree, which the
// go command does not stamp, or -buildvcs=false) says it has no revision.
func Format(program string, bi *debug.BuildInfo) string {
	var b strings.Builder
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	fmt.Fprintf(&b, "%s %s", program, version)
	setting := func(key string) string {
		for _, s := range bi.Settings {
			if s.Key == key {
				return s.Value
			}
		}
		return ""
	}
	if rev := setting("vcs.revision"); rev != "" {
		var details []string
		if t := setting("vcs.time"); t != "" {
			details = append(details, t)
		}
		if setting("vcs.modified") == "true" {
			details = append(details, "modified")
		} else {
			details = append(details, "clean")
		}
		fmt.Fprintf(&b, ", revision %s (%s)", rev, strings.Join(details, ", "))
	} else {
		b.WriteString(", no VCS revision")
	}
	goVersion := bi.GoVersion
	if goVersion == "" {
		goVersion = runtime.Version()
	}
	goos, goarch := setting("GOOS"), setting("GOARCH")
	if goos == "" || goarch == "" {
		goos, goarch = runtime.GOOS, runtime.GOARCH
	}
	fmt.Fprintf(&b, ", %s %s/%s", goVersion, goos, goarch)
	return b.String()
}

// IsVersionFlag reports whether arg asks for the version: --version or
// -version (as the flag package spells a flag either way).
func IsVersionFlag(arg string) bool {
	return arg == "--version" || arg == "-version"
}
