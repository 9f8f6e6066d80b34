package e2e

// The README's curl examples run here exactly as written, in the README's
// order, against ingest and the consumers started as `make run` starts
// them (the dev token), and each answer must be the one the README shows
// after the example.

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const (
	readmePath = "../README.md"
	// readmeURL is how every curl example names ingest, so that the test
	// can aim it at its own (make run's is on localhost:8080).
	readmeURL = "${BLOBREF_URL:-http://localhost:8080}"
	// readmeTokens is make run's AUTH_TOKENS (tools/devstack), a dev
	// token ingest takes only with AUTH_ALLOW_WEAK_TOKENS=true.
	readmeTokens = "dev-token=dev"
)

// fence is a fenced code block of a Markdown file.
type fence struct {
	lang string
	text string
	line int // of the opening fence
}

// example is a shell block with curl and the answer the README shows for
// it: the block after it, in http.
type example struct {
	script string
	line   int
	want   response
}

// response is an HTTP answer: as curl -i prints it, or as the README shows
// it.
type response struct {
	status int
	header [][2]string // in order; names as written
	body   string
}

func TestReadmeCurlExamples(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's examples need %s: %v", tool, err)
		}
	}
	examples := readmeExamples(t)

	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")
	in := p.startIngest("", "AUTH_TOKENS="+readmeTokens, "AUTH_ALLOW_WEAK_TOKENS=true")
	dir := t.TempDir()
	for _, ex := range examples {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", ex.script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "BLOBREF_URL=http://"+in.httpAddr)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("README line %d: %v\n%s\n%s%s", ex.line, err, ex.script, stdout.String(), stderr.String())
		}
		got, ok := parseCurl(stdout.String())
		if !ok {
			t.Fatalf("README line %d: no HTTP answer in the output of\n%s\n%s%s", ex.line, ex.script, stdout.String(), stderr.String())
		}
		checkAnswer(t, ex, got, stdout.String())
	}
}

// checkAnswer compares the answer an example got with the one the README
// shows: the status, each header shown (its value too unless it has an
// ellipsis), and the body's "state" and problem "type".
func checkAnswer(t *testing.T, ex example, got response, output string) {
	t.Helper()
	if got.status != ex.want.status {
		t.Errorf("README line %d: got status %d, want %d as the README shows:\n%s", ex.line, got.status, ex.want.status, output)
		return
	}
	for _, h := range ex.want.header {
		v, found := got.get(h[0])
		switch {
		case !found:
			t.Errorf("README line %d: the answer has no %s header, which the README shows:\n%s", ex.line, h[0], output)
		case !strings.Contains(h[1], "…") && v != h[1]:
			t.Errorf("README line %d: %s: got %q, README shows %q", ex.line, h[0], v, h[1])
		}
	}
	for _, key := range []string{"state", "type"} {
		re := regexp.MustCompile(`"` + key + `":"([^"…]*)"`)
		want := re.FindStringSubmatch(ex.want.body)
		if want == nil {
			continue
		}
		if g := re.FindStringSubmatch(got.body); g == nil || g[1] != want[1] {
			t.Errorf("README line %d: body %s: got %v, README shows %q:\n%s", ex.line, key, g, want[1], output)
		}
	}
}

// readmeExamples returns the README's shell blocks that run curl, each
// with the answer shown after it. A curl example that does not use
// readmeURL, or has no answer after it, fails the test.
func readmeExamples(t *testing.T) []example {
	t.Helper()
	text, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	fences := parseFences(string(text))
	var out []example
	curl := regexp.MustCompile(`(^|[\s;|&(])curl\s`)
	for i, f := range fences {
		if f.lang != "sh" || !curl.MatchString(f.text) {
			continue
		}
		if !strings.Contains(f.text, readmeURL) {
			t.Errorf("README line %d: a curl example that does not name ingest as %s, so the test cannot aim it at its own:\n%s", f.line, readmeURL, f.text)
			continue
		}
		if i+1 == len(fences) || fences[i+1].lang != "http" {
			t.Errorf("README line %d: a curl example without the answer it gets (a ```http block) after it", f.line)
			continue
		}
		want, ok := parseShown(fences[i+1].text)
		if !ok {
			t.Errorf("README line %d: the ```http block does not start with a status line", fences[i+1].line)
			continue
		}
		out = append(out, example{script: f.text, line: f.line, want: want})
	}
	if len(out) == 0 && !t.Failed() {
		t.Fatalf("%s has no curl examples (```sh blocks with curl)", readmePath)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// parseFences returns the fenced code blocks of a Markdown text, with the
// indentation of the fence (inside a list item) removed from their lines.
func parseFences(text string) []fence {
	var out []fence
	var cur *fence
	indent := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if cur == nil {
			if rest, ok := strings.CutPrefix(trimmed, "```"); ok {
				cur = &fence{lang: strings.TrimSpace(rest), line: n}
				indent = line[:len(line)-len(trimmed)]
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

// parseShown parses an answer as the README shows it.
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
