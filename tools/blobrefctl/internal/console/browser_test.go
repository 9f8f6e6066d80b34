package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/internal/testtools"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/blobrefctl/internal/pipelinetest"
)

// ArtifactsEnv names the directory where the browser test keeps its
// screenshots; by default blobref-artifacts in the system's temporary
// directory.
const ArtifactsEnv = "BLOBREF_ARTIFACTS"

// wait is how long the browser test waits for one thing to show.
const wait = 60 * time.Second

// The console in a real headless Chromium against the real pipeline: an
// upload made through ingest's API is found by id and by subject with its
// steps done; a request whose claim-checked bytes were missing is a dead
// letter, and once the bytes are staged its re-drive from the page
// completes it. Screenshots are kept as artifacts.
func TestConsoleInABrowser(t *testing.T) {
	t.Parallel()
	browser, err := testtools.Chromium(context.Background(), t.Output())
	if err != nil {
		t.Fatal(err) // never a skip: a machine without a browser fails, saying how to install one
	}
	p := pipelinetest.New(t)
	p.Start("blobwriter")
	p.Start("refwriter")
	ingest := p.StartIngest()

	// An upload through ingest's API.
	up, err := pipelinetest.Post(ingest, "users/42/avatar", "avatar-1", "hello console", 30*time.Second)
	if err != nil || up.State != "completed" {
		t.Fatalf("upload: got %+v, %v; want it completed", up, err)
	}

	// A request whose claim check names bytes not staged yet: blobwriter
	// dead-letters it (claim_missing).
	deadID := testenv.ID("dl")
	data := []byte("bytes staged late")
	sum := sha256.Sum256(data)
	req, err := events.NewRequested(events.Request{
		ID: deadID, Source: "/producer", Subject: "users/7/avatar", ContentType: "text/plain",
		DataRef: events.ObjectRef("uploads-staging", deadID), SHA256: hex.EncodeToString(sum[:]),
	})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, p.JS, req, deadID)
	if d := testenv.AwaitDeadLetters(t, p.JS, 1, wait)[events.RequestedSubject(deadID)]; d.Reason != events.ReasonClaimMissing {
		t.Fatalf("dead letter of %s: got %+v, want claim_missing", deadID, d)
	}

	token := "operatorQ7vX9pL2mN8rT4wY6bC1dF5gH7jK0"
	con := p.StartConsole(token+"=ops:read,operate", token)
	b := newBrowser(t, browser)
	b.run("sign in",
		chromedp.Navigate("http://"+con.HTTPAddr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), token),
		chromedp.Click(chromedp.CSS(`#signin button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#search-form`)),
	)
	if who := b.text(`#who`); !strings.Contains(who, "ops") || !strings.Contains(who, "operate") {
		t.Errorf("signed in as %q, want ops with the operate scope", who)
	}

	// By id: the search finds it; its page shows every step done.
	row := fmt.Sprintf(`#results tr[data-id=%q]`, up.ID)
	b.run("search by id",
		chromedp.SetValue(chromedp.CSS(`#q`), up.ID),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.Click(chromedp.CSS(row+` a`)),
		chromedp.WaitVisible(chromedp.CSS(`#state[data-state="completed"]`)),
	)
	if got, want := b.steps(), []string{"recorded=true", "accepted=true", "stored=true", "completed=true"}; !slices.Equal(got, want) {
		t.Errorf("steps of %s: got %v, want %v", up.ID, got, want)
	}
	if s := b.text(`#steps`); !strings.Contains(s, "uploads/"+up.ID) {
		t.Errorf("steps of %s say %q, want the object they stored", up.ID, s)
	}
	if s := b.text(`#events`); !strings.Contains(s, "uploads.requested."+up.ID) || !strings.Contains(s, "uploads.completed."+up.ID) {
		t.Errorf("events of %s: %q, want the request and the completion", up.ID, s)
	}
	b.screenshot("console-upload.png")

	// By subject.
	b.run("search by subject",
		chromedp.Navigate("http://"+con.HTTPAddr+"/#/search?q=users%2F42%2Favatar"),
		chromedp.WaitVisible(chromedp.CSS(row+`[data-state="completed"]`)),
	)

	// The consumers' lag and redeliveries.
	b.run("consumers",
		chromedp.Click(chromedp.CSS(`header a[data-nav="consumers"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#consumers tr[data-consumer="blobwriter"][data-pending="0"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#consumers tr[data-consumer="refwriter"][data-pending="0"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#streams tr[data-stream="UPLOADS_DLQ"]`)),
	)

	// The dead-lettered upload is failed, with its reason.
	b.run("failed upload",
		chromedp.Navigate("http://"+con.HTTPAddr+"/#/upload/"+deadID),
		chromedp.WaitVisible(chromedp.CSS(`#state[data-state="failed"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#dead-letter[data-reason="claim_missing"]`)),
	)
	b.screenshot("console-failed-upload.png")

	// Stage the bytes, then re-drive the dead letter from its page.
	store, err := p.JS.ObjectStore(context.Background(), "uploads-staging")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutBytes(context.Background(), deadID, data); err != nil {
		t.Fatal(err)
	}
	letter := fmt.Sprintf(`#dead-letters tr[data-upload=%q]`, deadID)
	b.run("dead letters",
		chromedp.Click(chromedp.CSS(`header a[data-nav="dead-letters"]`)),
		chromedp.WaitVisible(chromedp.CSS(letter+`[data-reason="claim_missing"]`)),
	)
	b.screenshot("console-dead-letters.png")
	b.run("re-drive",
		chromedp.Click(chromedp.CSS(letter+` button.redrive`)),
		chromedp.WaitVisible(chromedp.CSS(`#flash`)),
		chromedp.WaitVisible(chromedp.CSS(`#no-dead-letters`)),
	)
	if f := b.text(`#flash`); !strings.Contains(f, "Re-drove UPLOADS_DLQ") || !strings.Contains(f, "uploads.requested."+deadID) {
		t.Errorf("after the re-drive the page says %q", f)
	}
	// Its page follows it to completion on its own.
	b.run("re-driven upload completes",
		chromedp.Navigate("http://"+con.HTTPAddr+"/#/upload/"+deadID),
		chromedp.WaitVisible(chromedp.CSS(`#state[data-state="completed"]`)),
	)
	if got, want := b.steps(), []string{"accepted=true", "stored=true", "completed=true"}; !slices.Equal(got, want) {
		t.Errorf("steps of the re-driven %s: got %v, want %v", deadID, got, want)
	}
	if tl := b.text(`#timeline`); !strings.Contains(tl, "a re-drive of dead letter UPLOADS_DLQ #1") {
		t.Errorf("timeline of the re-driven %s: %q, want its re-drive", deadID, tl)
	}
	b.screenshot("console-redriven-upload.png")

	if n := p.PG.Count(t, `SELECT count(*) FROM upload_refs WHERE id = $1`, deadID); n != 1 {
		t.Errorf("reference rows of %s: got %d, want 1", deadID, n)
	}
	if d := testenv.DeadLetters(t, p.JS); len(d) != 0 {
		t.Errorf("dead letters after the re-drive: got %v, want none", d)
	}
	b.checkErrors()
}

// browser is a headless Chromium driven by chromedp for one test.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string

	mu       sync.Mutex
	problems []string      // JavaScript exceptions and errors the pages logged
	console  chan struct{} // closed when the console reader is done
}

func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	b := &browser{t: t, ctx: ctx, dir: artifacts(t), console: make(chan struct{})}
	// The first action starts the browser; it must not run under a
	// timeout, which would stop the browser with it.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start Chromium %s: %v", path, err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		defer close(b.console)
		for m, err := range messages {
			if err != nil {
				return
			}
			if (m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException) && !strings.HasSuffix(m.URL, "/favicon.ico") {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line))
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-b.console
		cancelAlloc()
	})
	return b
}

// run runs actions, failing the test with what when they do not finish
// within wait.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.screenshotOnFailure(what)
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// value runs one action that returns a value.
func value[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, wait)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.screenshotOnFailure(what)
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return value(b, "read "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// steps returns the upload page's steps as name=done.
func (b *browser) steps() []string {
	b.t.Helper()
	return value(b, "read the steps", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#steps li")).map(li => li.dataset.step + "=" + li.dataset.done)`))
}

// screenshot keeps a screenshot of the whole page as name in the artifacts
// directory.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := value(b, "screenshot "+name, chromedp.FullScreenshot(100))
	path := filepath.Join(b.dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}

func (b *browser) screenshotOnFailure(what string) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		path := filepath.Join(b.dir, "failed-"+strings.ReplaceAll(what, " ", "-")+".png")
		if os.WriteFile(path, png, 0o644) == nil {
			b.t.Logf("screenshot of the failure: %s", path)
		}
	}
}

// checkErrors fails the test for every JavaScript error the pages raised or
// logged (a refused Content-Security-Policy among them).
func (b *browser) checkErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("the page: %s", p)
	}
}

// artifacts returns the directory where the test keeps its screenshots.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "blobref-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%s: %v", ArtifactsEnv, err)
	}
	return dir
}
