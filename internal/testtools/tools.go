package testtools

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// The pinned versions, and what they are installed from.
const (
	MinIOPackage   = "github.com/minio/minio"
	MinIOVersion   = "v0.0.0-20260212201848-7aac2a2c5b7c"
	NATSCLIPackage = "github.com/nats-io/natscli/nats"
	NATSCLIVersion = "v0.5.0"
	// FakeGCSPackage is github.com/fsouza/fake-gcs-server, a Google Cloud
	// Storage emulator.
	FakeGCSPackage = "github.com/fsouza/fake-gcs-server"
	FakeGCSVersion = "v1.56.1"
	// AzuriteVersion is the release of the npm package azurite,
	// Microsoft's Azure Storage emulator: the last whose declared engines
	// include Node.js 20.
	AzuriteVersion = "3.35.0"
)

// The pinned versions of the checkers make lint runs, and their packages.
const (
	GosecPackage       = "github.com/securego/gosec/v2/cmd/gosec"
	GosecVersion       = "v2.30.0"
	GovulncheckPackage = "golang.org/x/vuln/cmd/govulncheck"
	GovulncheckVersion = "v1.10.0"
)

// NATSServerModule is the module nats-server is built from, at the version
// the workspace requires (go list -m), not a pinned one: the tests run the
// server blobref is built against.
const NATSServerModule = "github.com/nats-io/nats-server/v2"

// The environment variables that name a binary to use instead of the
// cached one.
const (
	MinIOEnv   = "BLOBREF_MINIO"
	NATSCLIEnv = "BLOBREF_NATS_CLI"
	FakeGCSEnv = "BLOBREF_FAKE_GCS_SERVER"
	AzuriteEnv = "BLOBREF_AZURITE_BLOB"
)

// A tool is a program the tests run, kept in the cache as one entry per
// version: the binary itself, or a directory holding it.
type tool struct {
	name    string                 // what messages call it
	env     string                 // names a binary to use instead; "" for none
	onPath  string                 // a program on PATH to use when the cache has none; "" for none
	took    string                 // how long an install takes on a cold machine
	version func() (string, error) // the version to install
	entry   string                 // the cache entry's name, before -<version>
	exe     string                 // the binary's path inside the entry; "" when the entry is the binary
	how     func(v string) string  // what fill does, for the messages
	// fill(ctx, tmp, v) installs version v into the empty directory tmp
	// and returns what becomes the cache entry: a file inside tmp, or tmp.
	fill func(ctx context.Context, tmp, v string) (string, error)
}

// all is every tool the tests run, in the order Install reports them.
var all = []*tool{minio, natsCLI, natsServer, fakeGCS, azurite}

// byName is every tool, test tools and checkers, by the name of its
// binary, for Path.
var byName = map[string]*tool{
	"minio": minio, "nats": natsCLI, "nats-server": natsServer, "fake-gcs-server": fakeGCS,
	"azurite-blob": azurite, "gosec": gosec, "govulncheck": govulncheck,
}

var gosec = &tool{
	name: "gosec", took: "a few minutes cold", version: pinned(GosecVersion), entry: "gosec",
	how: goInstallHow(GosecPackage), fill: goInstall(GosecPackage, "gosec", false),
}

var govulncheck = &tool{
	name: "govulncheck", took: "a few minutes cold", version: pinned(GovulncheckVersion), entry: "govulncheck",
	how: goInstallHow(GovulncheckPackage), fill: goInstall(GovulncheckPackage, "govulncheck", false),
}

var minio = &tool{
	name: "MinIO server", env: MinIOEnv, onPath: "minio", took: "about five minutes",
	version: pinned(MinIOVersion), entry: "minio",
	how:  goInstallHow(MinIOPackage),
	fill: goInstall(MinIOPackage, "minio", false),
}

var natsCLI = &tool{
	name: "NATS CLI", env: NATSCLIEnv, onPath: "nats", took: "about a minute",
	version: pinned(NATSCLIVersion), entry: "natscli", exe: "nats",
	how:  goInstallHow(NATSCLIPackage),
	fill: goInstall(NATSCLIPackage, "nats", true),
}

var fakeGCS = &tool{
	name: "fake-gcs-server", env: FakeGCSEnv, onPath: "fake-gcs-server",
	took:    "about 11 minutes cold, most of it downloading modules; 30 s with them downloaded",
	version: pinned(FakeGCSVersion), entry: "fake-gcs-server",
	how:  goInstallHow(FakeGCSPackage),
	fill: goInstall(FakeGCSPackage, "fake-gcs-server", false),
}

var azurite = &tool{
	name: "Azurite", env: AzuriteEnv, onPath: "azurite-blob", took: "under 2 minutes",
	version: pinned(AzuriteVersion), entry: "azurite", exe: filepath.Join("node_modules", ".bin", "azurite-blob"),
	how: func(v string) string { return "npm install --prefix <dir> azurite@" + v },
	fill: func(ctx context.Context, tmp, v string) (string, error) {
		const need = "Azurite runs on Node.js: install Node.js 18 or later with npm, e.g. apt-get install nodejs npm"
		for _, prog := range []string{"node", "npm"} {
			if _, err := exec.LookPath(prog); err != nil {
				return "", fmt.Errorf("%s is not on PATH (%s): %w", prog, need, err)
			}
		}
		err := run(ctx, tmp, nil, "npm", "install", "--prefix", tmp, "--no-audit", "--no-fund",
			"--no-update-notifier", "--loglevel=error", "azurite@"+v)
		return tmp, err
	},
}

var natsServer = &tool{
	name: "nats-server", took: "about a minute",
	version: sync.OnceValues(workspaceVersion), entry: "nats-server",
	how: func(v string) string { return "go build " + NATSServerModule + " (" + v + ", the workspace's)" },
	fill: func(ctx context.Context, tmp, _ string) (string, error) {
		// In the workspace, with its dependency versions. Never with
		// -race: what runs is the server as it ships.
		bin := filepath.Join(tmp, "nats-server")
		return bin, run(ctx, "", nil, "go", "build", "-trimpath", "-o", bin, NATSServerModule)
	},
}

func pinned(v string) func() (string, error) { return func() (string, error) { return v, nil } }

// workspaceVersion is the version of NATSServerModule the workspace (or
// module) in the current directory requires.
func workspaceVersion() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", NATSServerModule).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("testtools: the workspace's version of %s (run inside the workspace): %w", NATSServerModule, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func goInstallHow(pkg string) func(string) string {
	return func(v string) string { return "go install " + pkg + "@" + v }
}

// goInstall installs pkg@v into tmp with go install. With dir, tmp (the
// directory holding the binary) becomes the cache entry, else the binary.
func goInstall(pkg, exe string, dir bool) func(context.Context, string, string) (string, error) {
	return func(ctx context.Context, tmp, v string) (string, error) {
		// GOWORK=off: the tool's own go.mod decides its dependencies, not
		// blobref's workspace. GOTOOLCHAIN=local: the Go that runs the tests.
		env := []string{"GOBIN=" + tmp, "CGO_ENABLED=0", "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS=-trimpath"}
		if err := run(ctx, tmp, env, "go", "install", pkg+"@"+v); err != nil {
			return "", err
		}
		if dir {
			return tmp, nil
		}
		return filepath.Join(tmp, exe), nil
	}
}

// run runs a command in dir ("" for the current one) with extra
// environment, and returns its error with its output.
func run(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...) // #nosec G204 -- go or npm, installing a pinned tool
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
