package deploycheck

import (
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/blobref/blobref/internal/release"
)

// instruction is one Dockerfile instruction with its continuation lines
// joined.
type instruction struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
	Line int
}

// parseDockerfile splits a Dockerfile into instructions, as the Dockerfile
// frontend does: comments dropped, backslash-continued lines joined.
func parseDockerfile(t *testing.T, text string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || trimmed == "" {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.Join(strings.Fields(args), " "), Line: start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends inside a continued line (%d)", start)
	}
	return out
}

// makeVar returns the value of `NAME := value` in the Makefile.
func makeVar(t *testing.T, makefile, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\s*:?=\s*(.*)$`).FindStringSubmatch(makefile)
	if m == nil {
		t.Fatalf("Makefile does not set %s", name)
	}
	return strings.TrimSpace(m[1])
}

// shellWords splits s into words as a shell would, for flags quoted with
// single quotes only: -ldflags='-s -w' is the word -ldflags=-s -w.
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	quoted, in := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				words, in = append(words, w.String()), false
				w.Reset()
			}
		default:
			w.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

// TestDockerfileMatchesMakeBuild checks that the image builds a service, or
// blobrefctl, as `make build` does: same flags, same package path, static,
// and a release build: the flags the benchmarks and the tests of release
// builds use (release.BuildFlags), with no tag but its one.
func TestDockerfileMatchesMakeBuild(t *testing.T) {
	root := repoRoot(t)
	makefile := readFile(t, filepath.Join(root, "Makefile"))
	flags := makeVar(t, makefile, "GO_BUILD_FLAGS")
	if got, want := shellWords(flags), release.BuildFlags(); !slices.Equal(got, want) {
		t.Errorf("Makefile GO_BUILD_FLAGS %q: the words %q, want release.BuildFlags' %q", flags, got, want)
	}
	services(t, root) // SERVICES name real services
	buildRecipe := regexp.MustCompile(`(?m)^\tCGO_ENABLED=0 \$\(GO\) build \$\(GO_BUILD_FLAGS\) -o \$\(BIN\)/ \$\(addprefix \./services/,\$\(SERVICES\)\) \./tools/devstack$`)
	if !buildRecipe.MatchString(makefile) {
		t.Error("Makefile build recipe is not CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) -o $(BIN)/ $(addprefix ./services/,$(SERVICES)) ./tools/devstack")
	}
	if !strings.Contains(makefile, "\tCGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) -o $(BIN)/ ./tools/blobrefctl\n") {
		t.Error("Makefile does not build ./tools/blobrefctl with $(GO_BUILD_FLAGS), as the Dockerfile does for the setup image")
	}

	ins := parseDockerfile(t, readFile(t, filepath.Join(root, "Dockerfile")))
	var builds []instruction
	for _, in := range ins {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			builds = append(builds, in)
		}
	}
	if len(builds) != 1 {
		t.Fatalf("Dockerfile: got %d RUN instructions with go build, want 1", len(builds))
	}
	for _, want := range []string{
		`pkg="services/${SERVICE}"`, `pkg="tools/${SERVICE}"`,
		`CGO_ENABLED=0 go build ` + flags + ` -o /out/service "./${pkg}"`,
	} {
		if !strings.Contains(builds[0].Args, want) {
			t.Errorf("Dockerfile line %d: the build command has no %q:\n%s", builds[0].Line, want, builds[0].Args)
		}
	}
	if strings.Count(builds[0].Args, "-tags") != 1 {
		t.Errorf("Dockerfile line %d: build tags besides GO_BUILD_FLAGS' in a release image's build:\n%s", builds[0].Line, builds[0].Args)
	}
}

// TestDockerfile checks the image's shape: Go of the workspace's version,
// a distroless non-root final stage that exposes the metrics port.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	ins := parseDockerfile(t, readFile(t, filepath.Join(root, "Dockerfile")))
	var froms []instruction
	args := map[string]string{}
	for _, in := range ins {
		switch in.Cmd {
		case "FROM":
			froms = append(froms, in)
		case "ARG":
			name, def, _ := strings.Cut(in.Args, "=")
			if len(froms) == 0 || def != "" {
				args[name] = def
			}
		}
	}
	if len(froms) != 2 {
		t.Fatalf("Dockerfile: got %d stages, want 2 (build, final)", len(froms))
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(readFile(t, filepath.Join(root, "go.work")))
	if goVersion == nil {
		t.Fatal("go.work has no go line")
	}
	if froms[0].Args != "golang:${GO_VERSION} AS build" || args["GO_VERSION"] != goVersion[1] {
		t.Errorf("build stage: got FROM %s with GO_VERSION=%s, want golang:${GO_VERSION} AS build with GO_VERSION=%s (go.work)",
			froms[0].Args, args["GO_VERSION"], goVersion[1])
	}
	if froms[1].Args != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage: got FROM %s, want gcr.io/distroless/static-debian12:nonroot", froms[1].Args)
	}
	final := map[string][]string{}
	for _, in := range ins {
		if in.Line > froms[1].Line {
			final[in.Cmd] = append(final[in.Cmd], in.Args)
		}
	}
	for cmd, want := range map[string]string{
		"USER":       "nonroot:nonroot",
		"EXPOSE":     "${METRICS_PORT}",
		"ENV":        "METRICS_ADDR=:${METRICS_PORT}",
		"ENTRYPOINT": `["/usr/local/bin/service"]`,
		"COPY":       "--from=build /out/service /usr/local/bin/service",
	} {
		if !slices.Contains(final[cmd], want) {
			t.Errorf("final stage: no %s %s (got %q)", cmd, want, final[cmd])
		}
	}
	if !slices.Contains(final["ARG"], "SERVICE") || !slices.Contains(final["ARG"], "METRICS_PORT=9101") {
		t.Errorf("final stage: want ARG SERVICE and ARG METRICS_PORT=9101, got %q", final["ARG"])
	}
}

// TestDockerignoreKeepsTheWorkspace checks that the build context keeps
// go.work and every module it names: the Go build fails without them.
func TestDockerignoreKeepsTheWorkspace(t *testing.T) {
	root := repoRoot(t)
	var patterns []string
	for _, line := range strings.Split(readFile(t, filepath.Join(root, ".dockerignore")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimPrefix(strings.TrimSuffix(line, "/"), "./"))
		}
	}
	needed := []string{"go.work", "go.work.sum"}
	for _, m := range regexp.MustCompile(`(?m)^\s+\./(\S+)$`).FindAllStringSubmatch(readFile(t, filepath.Join(root, "go.work")), -1) {
		needed = append(needed, m[1], m[1]+"/go.mod", m[1]+"/go.sum")
	}
	if len(needed) < 5 {
		t.Fatalf("found no modules in go.work")
	}
	for _, p := range patterns {
		for _, n := range needed {
			// A pattern excludes n if it matches n or one of its parents.
			for dir := n; dir != "." && dir != "/"; dir = path.Dir(dir) {
				if ok, _ := path.Match(strings.TrimPrefix(p, "**/"), dir); ok {
					t.Errorf(".dockerignore %q excludes %s, which the Go build needs", p, n)
				}
			}
		}
	}
}

func TestShellWords(t *testing.T) {
	for in, want := range map[string][]string{
		"-trimpath -tags disable_grpc_modules -ldflags='-s -w'": {"-trimpath", "-tags", "disable_grpc_modules", "-ldflags=-s -w"},
		"  a  b ": {"a", "b"},
		"''":      {""},
		"":        nil,
	} {
		if got := shellWords(in); !slices.Equal(got, want) {
			t.Errorf("shellWords(%q) = %q, want %q", in, got, want)
		}
	}
}
