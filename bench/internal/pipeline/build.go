package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/blobref/blobref/internal/release"
)

// Names of the programs a pipeline runs.
const (
	NATSServer = "nats-server"
	Ingest     = "ingest"
	BlobWriter = "blobwriter"
	RefWriter  = "refwriter"
	// HTTPFloor is the benchmark's HTTP accept floor (bench/cmd/httpfloor),
	// always built from this tree.
	HTTPFloor = "httpfloor"
	// ChainFloor is the benchmark's latency floor (bench/cmd/chainfloor),
	// always built from this tree; it runs as three programs, one per
	// role: ChainFront, ChainStore and ChainRef.
	ChainFloor = "chainfloor"
	ChainFront = "chainfloor-front"
	ChainStore = "chainfloor-store"
	ChainRef   = "chainfloor-ref"
)

// chainRole is the FLOOR_ROLE of program name, one of the chain floor's
// (its name after "chainfloor-"); false for any other program.
func chainRole(name string) (string, bool) { return strings.CutPrefix(name, ChainFloor+"-") }

// packages are the Go packages of the programs, by name. nats-server comes
// from the version this module pins (a tool directive in go.mod).
var packages = map[string]string{
	NATSServer: "github.com/nats-io/nats-server/v2",
	Ingest:     "github.com/blobref/blobref/services/ingest",
	BlobWriter: "github.com/blobref/blobref/services/blobwriter",
	RefWriter:  "github.com/blobref/blobref/services/refwriter",
	HTTPFloor:  "github.com/blobref/blobref/bench/cmd/httpfloor",
	ChainFloor: "github.com/blobref/blobref/bench/cmd/chainfloor",
}

// Binaries are the programs built from the workspace, ready to run.
type Binaries struct {
	// Dir holds one executable per name.
	Dir string
	// Paths, when it has a name, is where that program is instead: a
	// service built elsewhere (from another tree, to compare two).
	Paths map[string]string
	// GoVersion is the version of the toolchain that built them.
	GoVersion string
	// Source says which tree they were built from: the commit and any
	// uncommitted changes.
	Source string
}

// Path is the executable of program name.
func (b Binaries) Path(name string) string {
	if p, ok := b.Paths[name]; ok {
		return p
	}
	if _, ok := chainRole(name); ok {
		return b.Path(ChainFloor) // one executable for the three roles
	}
	return filepath.Join(b.Dir, name)
}

// Build builds the programs names (by default nats-server and the three
// services) into dir with the go command on PATH. It must run inside the
// blobref workspace (any directory under go.work).
func Build(ctx context.Context, dir string, names ...string) (Binaries, error) {
	if len(names) == 0 {
		names = []string{NATSServer, Ingest, BlobWriter, RefWriter}
	}
	root, err := workspaceRoot(ctx)
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{Dir: dir}
	if b.GoVersion, err = output(ctx, root, "go", "env", "GOVERSION"); err != nil {
		return Binaries{}, err
	}
	// The services' release build: what is measured is what ships.
	args := append([]string{"build"}, release.BuildFlags()...)
	args = append(args, "-o", dir+string(filepath.Separator))
	for _, name := range names {
		pkg, ok := packages[name]
		if !ok {
			return Binaries{}, fmt.Errorf("pipeline: no program named %q", name)
		}
		args = append(args, pkg)
	}
	cmd := exec.CommandContext(ctx, "go", args...) // #nosec G204 -- go build of blobref's own programs
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("pipeline: go build: %w\n%s", err, out)
	}
	for _, name := range names {
		if _, err := os.Stat(b.Path(name)); err != nil {
			return Binaries{}, fmt.Errorf("pipeline: go build made no %s: %w", name, err)
		}
	}
	b.Source = source(ctx, root)
	return b, nil
}

// Prepare builds nats-server and, when servicesDir is "", services from
// the workspace into dir (as Build); with servicesDir it takes services
// prebuilt in that directory instead (a binary per name, from another tree,
// to compare two), and says so in Source.
func Prepare(ctx context.Context, dir, servicesDir string, services ...string) (Binaries, error) {
	if servicesDir == "" {
		return Build(ctx, dir, append([]string{NATSServer}, services...)...)
	}
	b, err := Build(ctx, dir, NATSServer)
	if err != nil {
		return Binaries{}, err
	}
	b.Paths = map[string]string{}
	var desc []string
	for _, name := range services {
		path, err := filepath.Abs(filepath.Join(servicesDir, name))
		if err != nil {
			return Binaries{}, fmt.Errorf("pipeline: %w", err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return Binaries{}, fmt.Errorf("pipeline: prebuilt %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return Binaries{}, fmt.Errorf("pipeline: prebuilt %s: %s is not an executable file", name, path)
		}
		b.Paths[name] = path
		built := ""
		if bi, err := buildinfo.ReadFile(path); err == nil {
			built = bi.GoVersion + ", "
		}
		desc = append(desc, fmt.Sprintf("%s (%smodified %s)", name, built, fi.ModTime().Format(time.RFC3339)))
	}
	b.Source = "prebuilt in " + servicesDir + ": " + strings.Join(desc, ", ")
	return b, nil
}

// workspaceRoot is the directory of the go.work the go command uses here.
func workspaceRoot(ctx context.Context) (string, error) {
	work, err := output(ctx, "", "go", "env", "GOWORK")
	if err != nil {
		return "", err
	}
	if work == "" || work == "off" {
		return "", errors.New("pipeline: not inside the blobref workspace (go env GOWORK is empty): run from the repository")
	}
	return filepath.Dir(work), nil
}

// source describes the tree at root: its commit and, when the work tree
// differs from it, where (the top two levels of the changed paths) and a
// digest of `git diff HEAD`, which tells two dirty trees apart. It says
// "unknown" without git.
func source(ctx context.Context, root string) string {
	rev, err := output(ctx, root, "git", "rev-parse", "--short", "HEAD")
	if err != nil {
		return "unknown (no git)"
	}
	cmd := exec.CommandContext(ctx, "git", "status", "--porcelain")
	cmd.Dir = root
	status, err := cmd.Output()
	if err != nil || len(bytes.TrimSpace(status)) == 0 {
		return rev
	}
	var dirs []string
	for line := range strings.Lines(string(status)) {
		if len(line) <= 3 {
			continue
		}
		path := strings.TrimSpace(line[3:]) // "XY path"
		if _, to, ok := strings.Cut(path, " -> "); ok {
			path = to
		}
		parts := strings.SplitN(strings.TrimSuffix(path, "/"), "/", 3)
		if dir := strings.Join(parts[:min(len(parts), 2)], "/"); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	desc := fmt.Sprintf("%s with uncommitted changes in %s", rev, strings.Join(dirs, ", "))
	cmd = exec.CommandContext(ctx, "git", "diff", "HEAD")
	cmd.Dir = root
	if diff, err := cmd.Output(); err == nil {
		sum := sha256.Sum256(diff)
		desc += fmt.Sprintf(" (git diff HEAD sha256 %x)", sum[:6])
	}
	return desc
}

// output runs a command in dir ("" for here) and returns its trimmed
// standard output.
func output(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...) // #nosec G204 -- the build's own commands (go, git)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("pipeline: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(string(out)), nil
}
