package e2e

// The NATS CLI and blobrefctl recipes of the README and docs/*.md (the
// recipes of docs/operations.md) run here exactly as written, with the real
// NATS CLI and blobrefctl, against a running pipeline. A recipe is a ```sh
// block that runs nats or blobrefctl, one per heading; each has a test
// below, named by its heading, that sets up the situation the recipe is
// for, runs it, and checks that it did what the doc says and that only the
// steps that had not finished ran.
//
// A recipe reads only the placeholders docs/operations.md documents, from
// the environment: NATS_URL (the test's server), ID and SINCE.

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/internal/testtools"
	"github.com/blobref/blobref/pkg/events"
)

// recipeNATSVersion is the NATS CLI the recipes are written for.
const recipeNATSVersion = testtools.NATSCLIVersion

// recipeCommand matches a shell block that runs the NATS CLI or blobrefctl.
var recipeCommand = regexp.MustCompile(`(?m)(^|[;&|(]|\$\()\s*(nats|(\./bin/)?blobrefctl)(\s|$)`)

// recipe is a ```sh block of README.md or docs/*.md that runs nats or
// blobrefctl, under its heading.
type recipe struct{ fence }

// recipeTests are the tests of the recipes, by heading. A recipe without a
// test, or a test without its recipe, fails TestReplayRecipes.
var recipeTests = map[string]func(t *testing.T, r recipe){
	"Publish an upload by hand":               testRecipePublish,
	"Look at one upload's events":             testRecipeLook,
	"See a consumer's lag and redeliveries":   testRecipeLag,
	"Replay one request":                      testRecipeReplayOne,
	"Replay everything since a point in time": testRecipeReplaySince,
	"Inspect dead letters":                    testRecipeInspectDeadLetters,
	"Re-drive dead letters":                   testRecipeRedrive,
}

func TestReplayRecipes(t *testing.T) {
	t.Parallel()
	recipes := docRecipes(t)
	recipeTools(t) // fail once, here, when a tool is missing
	seen := map[string]bool{}
	for _, r := range recipes {
		test, ok := recipeTests[r.heading]
		if !ok {
			t.Errorf("%s: the recipe under %q has no test in e2e/replay_test.go (recipeTests)", r.where(), r.heading)
			continue
		}
		seen[r.heading] = true
		t.Run(strings.ReplaceAll(r.heading, " ", "_"), func(t *testing.T) {
			t.Parallel()
			test(t, r)
		})
	}
	for h := range recipeTests {
		if !seen[h] {
			t.Errorf("recipeTests tests the recipe %q, which README.md and docs/*.md no longer have", h)
		}
	}
}

// docRecipes returns the recipes of README.md and docs/*.md: the ```sh
// blocks that run nats or blobrefctl, at most one under each heading, the
// headings unique. A block of another shell language that runs them fails
// the test (it would not run here); an unlabelled block is an
// illustration, not a recipe.
func docRecipes(t *testing.T) []recipe {
	t.Helper()
	var out []recipe
	byHeading := map[string]recipe{}
	for _, file := range docFiles(t) {
		for _, f := range docFences(t, file) {
			if !recipeCommand.MatchString(f.text) {
				continue
			}
			switch f.lang {
			case "sh":
			case "bash", "shell", "console", "zsh":
				t.Errorf("%s: a ```%s block that runs nats or blobrefctl; recipes are ```sh blocks, which the tests run", f.where(), f.lang)
				continue
			default:
				continue
			}
			if prev, ok := byHeading[f.heading]; ok {
				t.Errorf("%s: a second recipe under %q (the first at %s): one ```sh block per heading", f.where(), f.heading, prev.where())
				continue
			}
			r := recipe{f}
			byHeading[f.heading] = r
			out = append(out, r)
		}
	}
	if len(out) == 0 && !t.Failed() {
		t.Fatalf("README.md and docs/*.md have no recipes (```sh blocks that run nats or blobrefctl)")
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

var (
	recipeToolsOnce sync.Once
	recipePath      string // PATH with nats and blobrefctl first
	recipeToolsErr  error
)

// recipeTools builds blobrefctl (once) and finds the NATS CLI (make
// test-tools installs it; see testtools.NATSCLI), and returns the PATH the
// recipes run with: both first.
func recipeTools(t *testing.T) string {
	t.Helper()
	recipeToolsOnce.Do(func() {
		nats, err := testtools.NATSCLI()
		if err != nil {
			recipeToolsErr = fmt.Errorf("the docs' NATS CLI recipes need the NATS CLI: %w", err)
			return
		}
		if out, err := exec.Command(nats, "--version").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != recipeNATSVersion {
			// The recipes are written for and checked with this version; others
			// are run all the same.
			fmt.Fprintf(os.Stderr, "e2e: %s is NATS CLI %q, the docs' recipes are written for %s\n", nats, strings.TrimSpace(string(out)), recipeNATSVersion)
		}
		dir := filepath.Join(binDir, "recipe-tools")
		if err := testenv.Build(dir, "tools/blobrefctl"); err != nil {
			recipeToolsErr = err
			return
		}
		// The recipes call it nats, wherever it is and whatever its name.
		if err := os.Symlink(nats, filepath.Join(dir, "nats")); err != nil {
			recipeToolsErr = err
			return
		}
		recipePath = dir + string(os.PathListSeparator) + os.Getenv("PATH")
	})
	if recipeToolsErr != nil {
		t.Fatal(recipeToolsErr)
	}
	return recipePath
}

// runRecipe runs r as written with bash -euo pipefail, in a directory of its
// own, with the pipeline's NATS_URL and the placeholders in vars (ID,
// SINCE), and returns its output. No NATS CLI context or NATS_* variable of
// the machine reaches it.
func (p *pipeline) runRecipe(r recipe, vars map[string]string) string {
	p.t.Helper()
	path := recipeTools(p.t)
	home := p.t.TempDir()
	env := []string{}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "NATS_"), name == "PATH", name == "HOME", name == "XDG_CONFIG_HOME", name == "ID", name == "SINCE":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PATH="+path, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "NATS_URL="+p.nats.URL())
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", r.text)
	cmd.Dir = p.t.TempDir()
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		p.t.Fatalf("%s (%s): %v\n%s\nwith %v:\n%s", r.where(), r.heading, err, r.text, vars, out.String())
	}
	p.t.Logf("%s (%s) with %v:\n%s", r.where(), r.heading, vars, out.String())
	return out.String()
}

// uploadsStream returns UPLOADS or UPLOADS_DLQ.
func (p *pipeline) uploadsStream(name string) jetstream.Stream {
	p.t.Helper()
	s, err := p.js.Stream(context.Background(), name)
	if err != nil {
		p.t.Fatalf("stream %s: %v", name, err)
	}
	return s
}

// storedOn is how many messages of UPLOADS are on subject.
func (p *pipeline) storedOn(subject string) int {
	p.t.Helper()
	info, err := p.uploadsStream(events.StreamName).Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		p.t.Fatal(err)
	}
	return int(info.State.Subjects[subject])
}

// streamMsgs is how many messages stream holds.
func (p *pipeline) streamMsgs(name string) uint64 {
	p.t.Helper()
	info, err := p.uploadsStream(name).Info(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	return info.State.Msgs
}

// awaitStoredOn polls until UPLOADS holds n messages on subject.
func (p *pipeline) awaitStoredOn(subject string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := p.storedOn(subject)
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			p.t.Fatalf("messages on %s: got %d, want %d", subject, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// completedOnce publishes u and waits for it to complete.
func (p *pipeline) completedOnce(u upload) {
	p.t.Helper()
	p.publish(u, u.ID)
	if got := p.awaitCompleted(1, time.Minute); got[u.ID] != 1 {
		p.t.Fatalf("completed: got %v, want %s once", got, u.ID)
	}
}

// claimChecked publishes the request of u with its bytes claim-checked in
// the staging bucket, without staging them: blobwriter dead-letters it with
// reason claim_missing until they are staged.
func (p *pipeline) claimChecked(u upload) {
	p.t.Helper()
	ev, err := events.NewRequested(events.Request{
		ID: u.ID, Source: "/e2e", Subject: u.Subject, ContentType: "application/octet-stream", Time: u.Time,
		DataRef: "nats-object://" + stagingBucket + "/" + u.ID, SHA256: u.sha(),
	})
	if err != nil {
		p.t.Fatal(err)
	}
	testenv.Publish(p.t, p.js, ev, u.ID)
}

// stageClaim puts the bytes of u in the staging bucket, as ingest does.
func (p *pipeline) stageClaim(u upload) {
	p.t.Helper()
	ctx := context.Background()
	store, err := p.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: stagingBucket, Storage: jetstream.FileStorage})
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := store.PutBytes(ctx, u.ID, u.Data); err != nil {
		p.t.Fatal(err)
	}
}

// conflicting publishes a request for the completed upload u with other
// bytes, which blobwriter dead-letters with reason conflict.
func (p *pipeline) conflicting(u upload) {
	p.t.Helper()
	other := u
	other.Data = append([]byte("other "), u.Data...)
	p.publish(other, "")
}

// recipeEffects returns a step's side effects and skips in the process pr.
func recipeEffects(t *testing.T, pr *proc, step string) (done, skipped float64) {
	t.Helper()
	return pr.metric(t, "blobref_step_effects_total", `step="`+step+`"`),
		pr.metric(t, "blobref_step_messages_total", `step="`+step+`"`, `outcome="skipped"`)
}

// wantRecipeEffects checks a step's side effects and skips in the process
// pr. It polls for a while: a step counts a message once it has acked it,
// which may be after the test saw what the step emitted.
func wantRecipeEffects(t *testing.T, pr *proc, step string, done, skipped float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, s := recipeEffects(t, pr, step)
		if d == done && s == skipped {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s (%s): %v side effects and %v skips, want %v and %v", step, pr.Name, d, s, done, skipped)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantRecipeOutput checks that a recipe's output matches each regexp.
func wantRecipeOutput(t *testing.T, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Errorf("the output does not match %s", p)
		}
	}
}

// An upload published with nats pub completes like any other.
func testRecipePublish(t *testing.T, r recipe) {
	p := newPipeline(t)
	bw := p.start("blobwriter")
	rw := p.start("refwriter")
	id := testenv.ID("cli-")

	out := p.runRecipe(r, map[string]string{"ID": id})
	wantRecipeOutput(t, out, `Stored in Stream: UPLOADS Sequence: 1\b`)
	if got := p.awaitCompleted(1, time.Minute); got[id] != 1 {
		t.Fatalf("completed: got %v, want %s once", got, id)
	}
	wantRecipeEffects(t, bw, "blob", 1, 0)
	wantRecipeEffects(t, rw, "ref", 1, 0)
	var at time.Time
	if err := p.pg.Pool.QueryRow(context.Background(), `SELECT event_time FROM upload_refs WHERE id = $1`, id).Scan(&at); err != nil {
		t.Fatalf("reference of %s: %v", id, err)
	}
	if d := time.Since(at); d < 0 || d > 2*time.Minute {
		t.Errorf("event time %v: want the ce-time of the recipe, just now", at)
	}
	p.checkInvariants([]upload{{ID: id, Subject: "users/42/avatar", Data: []byte("hello"), Time: at}})
}

// Looking at an upload shows its three events and changes nothing.
func testRecipeLook(t *testing.T, r recipe) {
	p := newPipeline(t)
	bw := p.start("blobwriter")
	rw := p.start("refwriter")
	u := newUpload(testenv.ID("look-"), 100)
	other := newUpload(testenv.ID("other-"), 100)
	p.completedOnce(u)
	p.completedOnce(other)
	before := p.streamMsgs(events.StreamName)

	out := p.runRecipe(r, map[string]string{"ID": u.ID})
	q := regexp.QuoteMeta
	wantRecipeOutput(t, out,
		`uploads\.requested\.`+q(u.ID)+` +│ 1`,
		`uploads\.completed\.`+q(u.ID)+` +│ 1`,
		`uploads\.blob\.stored\.`+q(u.ID)+` +│ 1`,
		`subject: uploads\.requested\.`+q(u.ID)+` `,
		`subject: uploads\.completed\.`+q(u.ID)+` `,
		`(?i)ce-id: `+q(u.ID),
		`on Subject uploads\.blob\.stored\.`+q(u.ID),
		`"key":"uploads/`+q(u.ID)+`"`,
	)
	if strings.Contains(out, other.ID) {
		t.Errorf("the output shows upload %s too, want only %s", other.ID, u.ID)
	}
	if after := p.streamMsgs(events.StreamName); after != before {
		t.Errorf("UPLOADS: %d messages after looking, want %d", after, before)
	}
	p.completed.None(t, 500*time.Millisecond)
	wantRecipeEffects(t, bw, "blob", 2, 0)
	wantRecipeEffects(t, rw, "ref", 2, 0)
	p.checkInvariants([]upload{u, other})
}

// With refwriter down, its lag is what blobwriter has stored; a request
// that blobwriter keeps failing on shows as redelivered. Once both are
// well, only the steps that had not run run.
func testRecipeLag(t *testing.T, r recipe) {
	p := newPipeline(t)
	bw := p.start("blobwriter")
	p.start("refwriter").Stop(t) // its durable consumer exists, nobody reads it
	uploads := []upload{newUpload(testenv.ID("lag-"), 10), newUpload(testenv.ID("lag-"), 20), newUpload(testenv.ID("lag-"), 30)}
	for _, u := range uploads {
		p.publish(u, u.ID)
	}
	p.awaitConsumer(events.BlobWriterConsumer.Durable, func(c *jetstream.ConsumerInfo) bool {
		return c.NumPending == 0 && c.NumAckPending == 0 // blobwriter acks after its publish
	})
	wantRecipeEffects(t, bw, "blob", 3, 0)
	bw.Stop(t)
	failing := p.start("blobwriter", "BLOBREF_FAILPOINTS=blob/before-effect=error", "CONSUMER_MAX_DELIVERIES=100000")
	retried := newUpload(testenv.ID("retried-"), 40)
	p.publish(retried, retried.ID)
	p.awaitConsumer(events.BlobWriterConsumer.Durable, func(c *jetstream.ConsumerInfo) bool { return c.NumRedelivered > 0 })

	out := p.runRecipe(r, nil)
	wantRecipeOutput(t, out,
		`│ blobwriter +│ Pull +│ Explicit +│ [^│]+│ [^│]+│ 1 +│`,
		`│ refwriter +│ Pull +│ Explicit +│ [^│]+│ 0 +│ 0 +│ 3 / \d+%`,
		`Name: refwriter`,
		`Unprocessed Messages: 3\n`,
		`Redelivered Messages: 0\n`,
	)

	wantRecipeEffects(t, failing, "blob", 0, 0)
	failing.Stop(t)
	bw2 := p.start("blobwriter")
	rw := p.start("refwriter")
	uploads = append(uploads, retried)
	if got := p.awaitCompleted(4, time.Minute); len(got) != 4 {
		t.Fatalf("completed: got %v, want the 4 uploads", got)
	}
	wantRecipeEffects(t, bw2, "blob", 1, 0)
	wantRecipeEffects(t, rw, "ref", 4, 0)
	p.checkInvariants(uploads)
}

// awaitConsumer polls the durable consumer's info until ok.
func (p *pipeline) awaitConsumer(durable string, ok func(*jetstream.ConsumerInfo) bool) {
	p.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := p.js.Consumer(ctx, events.StreamName, durable)
		if err != nil {
			p.t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			p.t.Fatal(err)
		}
		if ok(info) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("consumer %s: %+v after a minute", durable, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Replaying a completed upload's request emits completed again and writes
// nothing; replaying one whose blob.stored event was lost while refwriter
// was down re-emits it from blobwriter's marker, and only the ref step
// runs.
func testRecipeReplayOne(t *testing.T, r recipe) {
	t.Run("completed", func(t *testing.T) {
		t.Parallel()
		p := newPipeline(t)
		bw := p.start("blobwriter")
		rw := p.start("refwriter")
		u := newUpload(testenv.ID("again-"), 300)
		other := newUpload(testenv.ID("other-"), 300)
		p.completedOnce(u)
		p.completedOnce(other)
		objects, rows := p.statObjects([]string{u.ID}), p.rowVersions()

		out := p.runRecipe(r, map[string]string{"ID": u.ID})
		wantRecipeOutput(t, out, `(?m)^replayed uploads\.requested\.`+regexp.QuoteMeta(u.ID)+` \(UPLOADS #1, .*Nats-Msg-Id replay-[0-9a-f]+/UPLOADS/1$`, `(?m)^replayed 1 event$`)
		if got := p.awaitCompleted(1, time.Minute); got[u.ID] != 1 {
			t.Fatalf("completed again: got %v, want %s once", got, u.ID)
		}
		p.completed.None(t, 500*time.Millisecond)
		if n := p.storedOn(events.RequestedSubject(u.ID)); n != 2 {
			t.Errorf("requests of %s: got %d, want 2 (the first and the replay)", u.ID, n)
		}
		wantRecipeEffects(t, bw, "blob", 2, 1)
		wantRecipeEffects(t, rw, "ref", 2, 1)
		if !maps.Equal(p.statObjects([]string{u.ID}), objects) {
			t.Errorf("the object of %s was rewritten by the replay", u.ID)
		}
		if !maps.Equal(p.rowVersions(), rows) {
			t.Errorf("reference rows were rewritten by the replay")
		}
		p.checkInvariants([]upload{u, other})
	})

	t.Run("ref_pending", func(t *testing.T) {
		t.Parallel()
		p := newPipeline(t)
		bw := p.start("blobwriter")
		p.start("refwriter").Stop(t)
		u := newUpload(testenv.ID("resume-"), 300)
		p.publish(u, u.ID)
		p.awaitStoredOn(events.BlobStoredSubject(u.ID), 1)
		// The blob.stored event is lost (purged, or aged out) before
		// refwriter read it: only the replay can get the upload on.
		if err := p.uploadsStream(events.StreamName).Purge(context.Background(), jetstream.WithPurgeSubject(events.BlobStoredSubject(u.ID))); err != nil {
			t.Fatal(err)
		}

		p.runRecipe(r, map[string]string{"ID": u.ID})
		p.awaitStoredOn(events.BlobStoredSubject(u.ID), 1) // emitted again from the marker
		wantRecipeEffects(t, bw, "blob", 1, 1)
		rw := p.start("refwriter")
		if got := p.awaitCompleted(1, time.Minute); got[u.ID] != 1 {
			t.Fatalf("completed: got %v, want %s once", got, u.ID)
		}
		wantRecipeEffects(t, bw, "blob", 1, 1)
		wantRecipeEffects(t, rw, "ref", 1, 0)
		p.checkInvariants([]upload{u})
	})
}

// A replay since a point in time republishes the requests stored since
// then, and not those before; of them, only the unfinished steps run.
func testRecipeReplaySince(t *testing.T, r recipe) {
	p := newPipeline(t)
	bw := p.start("blobwriter")
	rw := p.start("refwriter")
	before := newUpload(testenv.ID("before-"), 200)
	p.completedOnce(before)
	since := time.Now().UTC()
	done := newUpload(testenv.ID("done-"), 200)
	p.completedOnce(done)
	rw.Stop(t)
	half := newUpload(testenv.ID("half-"), 200)
	p.publish(half, half.ID)
	p.awaitStoredOn(events.BlobStoredSubject(half.ID), 1)

	out := p.runRecipe(r, map[string]string{"SINCE": since.Format(time.RFC3339Nano)})
	q := regexp.QuoteMeta
	wantRecipeOutput(t, out,
		`(?m)^would replay uploads\.requested\.`+q(done.ID)+` `,
		`(?m)^would replay uploads\.requested\.`+q(half.ID)+` `,
		`(?m)^dry run: would replay 2 events$`,
		`(?m)^replayed uploads\.requested\.`+q(done.ID)+` `,
		`(?m)^replayed uploads\.requested\.`+q(half.ID)+` `,
		`(?m)^replayed 2 events$`,
	)
	if strings.Contains(out, "replay uploads.requested."+before.ID) || strings.Contains(out, "replayed uploads.requested."+before.ID) {
		t.Errorf("%s, stored before SINCE, was replayed", before.ID)
	}
	for id, want := range map[string]int{before.ID: 1, done.ID: 2, half.ID: 2} {
		if got := p.storedOn(events.RequestedSubject(id)); got != want {
			t.Errorf("requests of %s: got %d, want %d", id, got, want)
		}
	}
	p.awaitStoredOn(events.BlobStoredSubject(done.ID), 2)
	p.awaitStoredOn(events.BlobStoredSubject(half.ID), 2)
	wantRecipeEffects(t, bw, "blob", 3, 2)

	rw2 := p.start("refwriter")
	got := p.awaitCompleted(3, time.Minute)
	if got[done.ID] != 1 || got[half.ID] != 2 {
		t.Errorf("completed: got %v, want %s once (replayed) and %s twice (its first blob.stored and the replayed one)", got, done.ID, half.ID)
	}
	p.completed.None(t, 500*time.Millisecond)
	wantRecipeEffects(t, rw2, "ref", 1, 2) // half's reference, nothing else
	wantRecipeEffects(t, bw, "blob", 3, 2)
	p.checkInvariants([]upload{before, done, half})
}

// Inspecting the dead letters shows them with their reasons and changes
// nothing.
func testRecipeInspectDeadLetters(t *testing.T, r recipe) {
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")
	missing := newUpload(testenv.ID("missing-"), 500)
	conflict := newUpload(testenv.ID("conflict-"), 500)
	p.completedOnce(conflict)
	p.claimChecked(missing)
	p.conflicting(conflict)
	testenv.AwaitDeadLetters(t, p.js, 2, time.Minute)

	out := p.runRecipe(r, map[string]string{"ID": missing.ID})
	q := regexp.QuoteMeta
	wantRecipeOutput(t, out,
		`dlq\.uploads\.requested\.`+q(missing.ID)+` +│ 1`,
		`dlq\.uploads\.requested\.`+q(conflict.ID)+` +│ 1`,
		`Blobref-Dead-Reason: claim_missing`,
		`Blobref-Dead-Reason: conflict`,
		`Blobref-Dead-Subject: uploads\.requested\.`+q(missing.ID),
		`(?m)^SEQ +DEAD AT +REASON +STEP +DELIVERIES +SUBJECT +ERROR\n\d+ +\S+ +claim_missing +blob +1 +uploads\.requested\.`+q(missing.ID)+` +claim_missing: dataref .*\n1 dead letter$`,
	)
	if n := p.streamMsgs(events.DLQStreamName); n != 2 {
		t.Errorf("UPLOADS_DLQ: %d messages after inspecting, want 2", n)
	}
}

// Dead letters of a transient cause (claim-checked bytes not staged yet)
// re-driven after the cause is gone complete, and their dead letters go;
// a conflict is left alone.
func testRecipeRedrive(t *testing.T, r recipe) {
	p := newPipeline(t)
	bw := p.start("blobwriter")
	rw := p.start("refwriter")
	one := newUpload(testenv.ID("one-"), 700)
	rest := newUpload(testenv.ID("rest-"), 700)
	conflict := newUpload(testenv.ID("conflict-"), 700)
	p.completedOnce(conflict)
	p.claimChecked(one)
	p.claimChecked(rest)
	p.conflicting(conflict)
	dead := testenv.AwaitDeadLetters(t, p.js, 3, time.Minute)
	for id, reason := range map[string]string{one.ID: events.ReasonClaimMissing, rest.ID: events.ReasonClaimMissing, conflict.ID: events.ReasonConflict} {
		if d := dead[events.RequestedSubject(id)]; d.Reason != reason {
			t.Fatalf("dead letter of %s: got %+v, want reason %s", id, d, reason)
		}
	}
	p.stageClaim(one)
	p.stageClaim(rest)

	out := p.runRecipe(r, map[string]string{"ID": one.ID})
	q := regexp.QuoteMeta
	wantRecipeOutput(t, out,
		`(?m)^would re-drive UPLOADS_DLQ #\d+ \(claim_missing, step blob\) to uploads\.requested\.`+q(one.ID)+`$`,
		`(?m)^would re-drive UPLOADS_DLQ #\d+ \(claim_missing, step blob\) to uploads\.requested\.`+q(rest.ID)+`$`,
		`(?m)^dry run: would re-drive 2 dead letters$`,
		`(?m)^re-drove UPLOADS_DLQ #\d+ \(claim_missing, step blob\) to uploads\.requested\.`+q(one.ID)+` as UPLOADS #\d+, Nats-Msg-Id redrive/UPLOADS_DLQ/\d+; dead letter deleted\nre-drove 1 dead letter\n`,
		`(?m)^re-drove UPLOADS_DLQ #\d+ \(claim_missing, step blob\) to uploads\.requested\.`+q(rest.ID)+` as UPLOADS #\d+, Nats-Msg-Id redrive/UPLOADS_DLQ/\d+; dead letter deleted\nre-drove 1 dead letter\n`,
	)
	got := p.awaitCompleted(2, time.Minute)
	if got[one.ID] != 1 || got[rest.ID] != 1 {
		t.Fatalf("completed: got %v, want %s and %s once", got, one.ID, rest.ID)
	}
	p.completed.None(t, 500*time.Millisecond)
	for id, want := range map[string]int{one.ID: 2, rest.ID: 2} {
		if n := p.storedOn(events.RequestedSubject(id)); n != want {
			t.Errorf("requests of %s: got %d, want %d (the first and one re-drive)", id, n, want)
		}
	}
	left := testenv.DeadLetters(t, p.js)
	if len(left) != 1 || left[events.RequestedSubject(conflict.ID)].Reason != events.ReasonConflict {
		t.Errorf("dead letters after the re-drive: got %v, want only the conflict of %s", left, conflict.ID)
	}
	if n := p.streamMsgs(events.DLQStreamName); n != 1 {
		t.Errorf("UPLOADS_DLQ: %d messages, want 1", n)
	}
	wantRecipeEffects(t, bw, "blob", 3, 0)
	wantRecipeEffects(t, rw, "ref", 3, 0)
	p.checkInvariants([]upload{conflict, one, rest})
}
