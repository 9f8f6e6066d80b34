package e2e

// The curl examples of the README and of docs/*.md run here exactly as
// written, each file's in its order, against ingest and the consumers
// started as `make run` starts them (the dev token), and each answer must
// be the one the file shows after the example. Each file runs against a
// pipeline of its own, as a reader who follows one page from a fresh
// `make run` would.

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	// docsRoot is the repository's root, where README.md and docs/ are.
	docsRoot = ".."
	// readmeURL is how every curl example names ingest, so that the test
	// can aim it at its own (make run's is on localhost:8080).
	readmeURL = "${BLOBREF_URL:-http://localhost:8080}"
	// readmeTokens is make run's AUTH_TOKENS (tools/devstack), a dev
	// token ingest takes only with AUTH_ALLOW_WEAK_TOKENS=true.
	readmeTokens = "dev-token=dev"
)

// docFiles returns the documentation whose examples the tests run:
// README.md, then docs/*.md in name order, as paths relative to the
// repository's root.
func docFiles(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(docsRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatalf("no docs/*.md under %s", docsRoot)
	}
	files := []string{"README.md"}
	for _, d := range docs {
		rel, err := filepath.Rel(docsRoot, d)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.ToSlash(rel))
	}
	slices.Sort(files[1:])
	return files
}

// fence is a fenced code block of a Markdown file.
type fence struct {
	file    string // relative to the repository's root
	heading string // the nearest heading above it, without its #s
	lang    string
	text    string
	line    int // of the opening fence
}

// where names a fence's place for a failure message.
func (f fence) where() string { return f.file + " line " + strconv.Itoa(f.line) }

// example is a shell block with curl and the answer its file shows for
// it: the block after it, in http.
type example struct {
	fence
	want response
}

// response is an HTTP answer: as curl -i prints it, or as a doc shows
// it.
type response struct {
	status int
	header [][2]string // in order; names as written
	body   string
}

func TestDocCurlExamples(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the docs' examples need %s: %v", tool, err)
		}
	}
	byFile := docExamples(t)
	for _, file := range docFiles(t) {
		examples := byFile[file]
		if len(examples) == 0 {
			continue
		}
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			runCurlExamples(t, examples)
		})
	}
}

// runCurlExamples runs one file's examples in order against a pipeline of
// their own.
func runCurlExamples(t *testing.T, examples []example) {
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")
	in := p.startIngest("", "AUTH_TOKENS="+readmeTokens, "AUTH_ALLOW_WEAK_TOKENS=true")
	dir := t.TempDir()
	for _, ex := range examples {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", ex.text)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "BLOBREF_URL=http://"+in.httpAddr)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s\n%s%s", ex.where(), err, ex.text, stdout.String(), stderr.String())
		}
		got, ok := parseCurl(stdout.String())
		if !ok {
			t.Fatalf("%s: no HTTP answer in the output of\n%s\n%s%s", ex.where(), ex.text, stdout.String(), stderr.String())
		}
		checkAnswer(t, ex, got, stdout.String())
	}
}

// checkAnswer compares the answer an example got with the one its file
// shows: the status, each header shown (its value too unless it has an
// ellipsis), and the body's "state" and problem "type".
func checkAnswer(t *testing.T, ex example, got response, output string) {
	t.Helper()
	if got.status != ex.want.status {
		t.Errorf("%s: got status %d, want %d as shown:\n%s", ex.where(), got.status, ex.want.status, output)
		return
	}
	for _, h := range ex.want.header {
		v, found := got.get(h[0])
		switch {
		case !found:
			t.Errorf("%s: the answer has no %s header, which the doc shows:\n%s", ex.where(), h[0], output)
		case !strings.Contains(h[1], "…") && v != h[1]:
			t.Errorf("%s: %s: got %q, the doc shows %q", ex.where(), h[0], v, h[1])
		}
	}
	for _, key := range []string{"state", "type"} {
		re := regexp.MustCompile(`"` + key + `":"([^"…]*)"`)
		want := re.FindStringSubmatch(ex.want.body)
		if want == nil {
			continue
		}
		if g := re.FindStringSubmatch(got.body); g == nil || g[1] != want[1] {
			t.Errorf("%s: body %s: got %v, the doc shows %q:\n%s", ex.where(), key, g, want[1], output)
		}
	}
}

// docExamples returns, by file, the shell blocks of docFiles that run
// curl, each with the answer shown after it. A curl example that does not
// use readmeURL, or has no answer after it, fails the test, as do docs
// without any.
func docExamples(t *testing.T) map[string][]example {
	t.Helper()
	out := map[string][]example{}
	n := 0
	curl := regexp.MustCompile(`(^|[\s;|&(])curl\s`)
	for _, file := range docFiles(t) {
		fences := docFences(t, file)
		for i, f := range fences {
			if f.lang != "sh" || !curl.MatchString(f.text) {
				continue
			}
			if !strings.Contains(f.text, readmeURL) {
				t.Errorf("%s: a curl example that does not name ingest as %s, so the test cannot aim it at its own:\n%s", f.where(), readmeURL, f.text)
				continue
			}
			if i+1 == len(fences) || fences[i+1].lang != "http" {
				t.Errorf("%s: a curl example without the answer it gets (a ```http block) after it", f.where())
				continue
			}
			want, ok := parseShown(fences[i+1].text)
			if !ok {
				t.Errorf("%s: the ```http block does not start with a status line", fences[i+1].where())
				continue
			}
			out[file] = append(out[file], example{fence: f, want: want})
			n++
		}
	}
	if n == 0 && !t.Failed() {
		t.Fatalf("README.md and docs/*.md have no curl examples (```sh blocks with curl)")
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// docFences reads file (relative to the repository's root) and returns its
// fenced code blocks.
func docFences(t *testing.T, file string) []fence {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(docsRoot, filepath.FromSlash(file)))
	if err != nil {
		t.Fatal(err)
	}
	return parseFences(file, string(text))
}

// parseFences returns the fenced code blocks of a Markdown text, each with
// the heading it is under, and with the indentation of the fence (inside a
// list item) removed from their lines.
func parseFences(file, text string) []fence {
	var out []fence
	var cur *fence
	indent, heading := "", ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if cur == nil {
			if rest, ok := strings.CutPrefix(trimmed, "```"); ok {
				cur = &fence{file: file, heading: heading, lang: strings.TrimSpace(rest), line: n}
				indent = line[:len(line)-len(trimmed)]
			} else if strings.HasPrefix(line, "#") {
				heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") {
			out = append(out, *cur)
			cur = nil
			continue
		}
		cur.text += strings.TrimPrefix(line, indent) + "\n"
	}
	return out
}

// parseShown parses an answer as a doc shows it.
func parseShown(text string) (response, bool) {
	head, body, _ := strings.Cut(text, "\n\n")
	lines := strings.Split(head, "\n")
	r, ok := response{body: body}, false
	r.status, ok = statusOf(lines[0])
	for _, l := range lines[1:] {
		if name, value, found := strings.Cut(l, ":"); found {
			r.header = append(r.header, [2]string{name, strings.TrimSpace(value)})
		}
	}
	return r, ok
}

// parseCurl parses the last answer in the output of curl -i (a 100
// Continue may come before it).
func parseCurl(out string) (response, bool) {
	out = strings.ReplaceAll(out, "\r\n", "\n")
	i := strings.LastIndex("\n"+out, "\nHTTP/")
	if i < 0 {
		return response{}, false
	}
	return parseShown(out[i:])
}

// statusOf returns the code of a status line such as "HTTP/1.1 202 Accepted".
func statusOf(line string) (int, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return 0, false
	}
	code, err := strconv.Atoi(f[1])
	return code, err == nil
}

// get returns the value of header name (case-insensitive).
func (r response) get(name string) (string, bool) {
	for _, h := range r.header {
		if strings.EqualFold(h[0], name) {
			return h[1], true
		}
	}
	return "", false
}
