package deploycheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/blobref/blobref/internal/testenv"
)

// repoRoot is the directory holding go.work.
var repoRoot = testenv.RepoRoot

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// services lists the services `make build` builds (the Makefile's
// SERVICES): each must have a services/<name>/main.go, an image built from
// the Dockerfile, a compose service and a Deployment. A directory under
// services/ that is not listed yet is only logged, so a service can land
// before its deployment.
func services(t *testing.T, root string) []string {
	t.Helper()
	names := strings.Fields(makeVar(t, readFile(t, filepath.Join(root, "Makefile")), "SERVICES"))
	if len(names) == 0 {
		t.Fatal("Makefile SERVICES is empty")
	}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(root, "services", name, "main.go")); err != nil {
			t.Errorf("Makefile SERVICES names %s, but services/%s/main.go: %v", name, name, err)
		}
	}
	mains, err := filepath.Glob(filepath.Join(root, "services", "*", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mains {
		if name := filepath.Base(filepath.Dir(m)); !slices.Contains(names, name) {
			t.Logf("services/%s is not in the Makefile's SERVICES yet: its deployment is not checked", name)
		}
	}
	return names
}

// envNames returns the environment variables a service reads: the `env`
// struct tags in its own package and in the shared configuration it embeds
// (internal/service and the step runtime's pkg/step/stepservice).
func envNames(t *testing.T, root, service string) map[string]bool {
	t.Helper()
	return envNamesOf(t, root, filepath.Join("services", service))
}

// envNamesOf returns the environment variables the command at dir (e.g.
// tools/blobrefctl) reads: the `env` struct tags in its own package, in
// internal/service and in pkg/step/stepservice.
func envNamesOf(t *testing.T, root, dir string) map[string]bool {
	t.Helper()
	service := dir
	names := map[string]bool{}
	for _, dir := range []string{filepath.Join(root, dir), filepath.Join(root, "internal", "service"), filepath.Join(root, "pkg", "step", "stepservice")} {
		fset := token.NewFileSet()
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("parse %s: %v", path, err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				field, ok := n.(*ast.Field)
				if !ok || field.Tag == nil {
					return true
				}
				tag, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					return true
				}
				if name, _, _ := strings.Cut(reflect.StructTag(tag).Get("env"), ","); name != "" {
					names[name] = true
				}
				return true
			})
		}
	}
	if !names["NATS_URL"] || !names["DATABASE_URL"] {
		t.Fatalf("%s: found no NATS_URL or DATABASE_URL env tag; the config parsing here is out of date", service)
	}
	return names
}

// sdkEnv are variables the services do not read themselves but their
// libraries do: the AWS SDK inside gocloud.dev's s3blob.
var sdkEnv = map[string]bool{
	"AWS_ACCESS_KEY_ID": true, "AWS_SECRET_ACCESS_KEY": true, "AWS_SESSION_TOKEN": true,
	"AWS_REGION": true, "AWS_DEFAULT_REGION": true, "AWS_PROFILE": true, "AWS_SHARED_CREDENTIALS_FILE": true,
	"GOOGLE_APPLICATION_CREDENTIALS": true,
	"AZURE_STORAGE_ACCOUNT":          true, "AZURE_STORAGE_KEY": true, "AZURE_STORAGE_SAS_TOKEN": true,
}

// checkEnv reports variables set for service that nothing reads.
func checkEnv(t *testing.T, where string, known map[string]bool, set []string) {
	t.Helper()
	for _, name := range set {
		if !known[name] && !sdkEnv[name] {
			t.Errorf("%s sets %s, which the service does not read (a typo?)", where, name)
		}
	}
}

func TestEnvNamesParse(t *testing.T) {
	root := repoRoot(t)
	for _, svc := range services(t, root) {
		names := envNames(t, root, svc)
		for _, want := range []string{"METRICS_ADDR", "LOG_FORMAT", "STREAM_REPLICAS"} {
			if !names[want] {
				t.Errorf("%s: env names lack %s", svc, want)
			}
		}
	}
}
