package cli_test

import (
	"bytes"
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/blobrefctl/internal/cli"
	"github.com/blobref/blobref/tools/blobrefctl/internal/pipelinetest"
)

// blobrefctl retention against the real pipeline, Postgres and JetStream:
// an upload whose event is 30 hours old completes while UPLOADS keeps
// events for 48 hours. The operator shortens that to 2 hours (a horizon of
// 26 hours): a dry run counts and deletes nothing, the job deletes the
// upload's markers and the other records past the horizon and keeps every
// younger one, the references and the ingest record never published; a
// replay of the old upload's request is then dead-lettered as expired and
// runs nothing; a second run deletes nothing more.
func TestRetentionDeletesWhatNoReplayReaches(t *testing.T) {
	// No t.Parallel: t.Setenv.
	p := pipelinetest.New(t)
	ctx := context.Background()
	now := time.Now()
	start := func(maxAge string) []*pipelinetest.Proc {
		return []*pipelinetest.Proc{p.Start("blobwriter", "STREAM_MAX_AGE="+maxAge), p.Start("refwriter", "STREAM_MAX_AGE="+maxAge)}
	}
	procs := start("48h")
	request := func(id string, at time.Time) *events.Event {
		t.Helper()
		ev, err := events.NewRequested(events.Request{
			ID: id, Source: "/producer", Subject: "users/" + id, ContentType: "text/plain", Data: []byte("bytes of " + id), Time: at,
		})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	old, young := testenv.ID("old"), testenv.ID("young")
	oldReq := request(old, now.Add(-30*time.Hour))
	testenv.Publish(t, p.JS, oldReq, old)
	testenv.Publish(t, p.JS, request(young, now.Add(-time.Hour)), young)
	p.PG.AwaitCount(t, time.Minute, 2, `SELECT count(*) FROM upload_refs WHERE id = ANY($1)`, []string{old, young})

	// The old upload's markers were recorded when its event was new, and
	// the young one's an hour ago; ingest's records and leases and the
	// excused deliveries of several ages.
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := p.PG.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`UPDATE step_markers SET created_at = $2 WHERE upload_id = $1`, old, now.Add(-30*time.Hour))
	exec(`UPDATE step_markers SET created_at = $2 WHERE upload_id = $1`, young, now.Add(-time.Hour))
	// Younger than the horizon by less than the clock skew the steps allow:
	// kept.
	exec(`INSERT INTO step_markers (upload_id, step, fingerprint, result, created_at) VALUES ('skewed', 'blob', 'x', '{}', $1)`,
		now.Add(-26*time.Hour-time.Minute))
	for _, u := range []struct {
		id        string
		age       time.Duration
		published bool
	}{{"u-old", 40 * time.Hour, true}, {"u-unpublished", 40 * time.Hour, false}, {"u-young", 2 * time.Hour, true}} {
		var at any
		if u.published {
			at = now.Add(-u.age + time.Second)
		}
		exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, created_at, published_at)
			VALUES ($1, 'c', $1, 'users/x', 'text/plain', 1, $2, $3, $4)`, u.id, strings.Repeat("0", 64), now.Add(-u.age), at)
		// None completed: each listed incomplete, as ingest records it.
		exec(`INSERT INTO ingest_incomplete (id) VALUES ($1)`, u.id)
	}
	exec(`INSERT INTO ingest_leases (id, holder, expires_at) VALUES ('l-old', 'h', $1), ('l-young', 'h', $2)`,
		now.Add(-27*time.Hour), now.Add(time.Minute))
	// UPLOADS' first message (the old request, done) is gone from the
	// stream: its excused deliveries go, however recent; those of a
	// message still stored stay unless they are past the horizon.
	stream, err := p.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(2)); err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO excused_deliveries (step, stream, seq, excused, updated_at) VALUES
		('blob', 'UPLOADS', 1, 1, $1), ('blob', 'UPLOADS', 2, 1, $1), ('blob', 'UPLOADS', 3, 1, $2)`,
		now.Add(-time.Hour), now.Add(-30*24*time.Hour))

	// The operator keeps events for 2 hours from now on: the services
	// update UPLOADS and read its new horizon as they start.
	for _, pr := range procs {
		pr.Stop(t)
	}
	start("2h")
	if s, err := p.JS.Stream(ctx, events.StreamName); err != nil || s.CachedInfo().Config.MaxAge != 2*time.Hour {
		t.Fatalf("stream %s: %v, want max age 2h", events.StreamName, err)
	}

	t.Setenv("NATS_URL", p.NATS.URL())
	t.Setenv("DATABASE_URL", p.PG.URL)
	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := cli.Main(ctx, args, &stdout, &stderr); code != 0 {
			t.Fatalf("blobrefctl %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
		}
		return stdout.String()
	}
	rows := func() string {
		t.Helper()
		var parts []string
		for _, q := range []string{
			`SELECT upload_id || '/' || step FROM step_markers`,
			`SELECT 'ref:' || id FROM upload_refs`,
			`SELECT 'upload:' || id FROM ingest_uploads`,
			`SELECT 'incomplete:' || id FROM ingest_incomplete`,
			`SELECT 'lease:' || id FROM ingest_leases`,
			`SELECT 'excused:' || seq FROM excused_deliveries`,
		} {
			for k := range p.PG.Map(t, `SELECT v, v FROM (`+q+`) AS t(v)`) {
				parts = append(parts, k)
			}
		}
		slices.Sort(parts)
		return strings.Join(parts, " ")
	}
	before := rows()

	out := run("retention", "--dry-run")
	wantCounts := `(?m)^dry run: would delete 2 step markers, 2 excused delivery records, 1 ingest upload, 1 ingest lease$`
	if !regexp.MustCompile(wantCounts).MatchString(out) || !strings.Contains(out, "horizon 26h0m0s (UPLOADS max age 2h0m0s + margin 24h0m0s)") {
		t.Errorf("retention --dry-run: got\n%s\nwant the horizon and a line matching %s", out, wantCounts)
	}
	if after := rows(); after != before {
		t.Errorf("retention --dry-run deleted rows: before %s, after %s", before, after)
	}

	out = run("retention")
	if !strings.Contains(out, "deleted 2 step markers, 2 excused delivery records, 1 ingest upload, 1 ingest lease\n") ||
		!strings.Contains(out, "kept 1 ingest upload older than the horizon") {
		t.Errorf("retention: got\n%s\nwant 2 markers, 2 excuses, 1 upload and 1 lease deleted, 1 unpublished upload kept", out)
	}
	want := []string{
		"excused:2", "lease:l-young", "ref:" + old, "ref:" + young, "skewed/blob",
		"upload:u-unpublished", "upload:u-young", young + "/blob", young + "/ref",
		"incomplete:u-unpublished", "incomplete:u-young",
	}
	slices.Sort(want)
	if got := rows(); got != strings.Join(want, " ") {
		t.Errorf("after retention: got rows\n%s\nwant\n%s", got, strings.Join(want, " "))
	}

	// A replay of the old upload's request: refused, nothing runs.
	testenv.Publish(t, p.JS, oldReq, "")
	d, _ := testenv.AwaitDeadLetter(t, p.JS, events.RequestedSubject(old), time.Minute)
	if d.Reason != events.ReasonExpired || d.Step != "blob" {
		t.Errorf("replay of %s: dead letter %+v, want reason expired from step blob", old, d)
	}
	if n := p.PG.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = $1`, old); n != 0 {
		t.Errorf("replay of %s: %d markers, want none (the step did not run)", old, n)
	}
	if n := p.PG.Count(t, `SELECT count(*) FROM upload_refs WHERE id = $1`, old); n != 1 {
		t.Errorf("replay of %s: %d references, want 1", old, n)
	}
	if n := countOn(t, p, events.BlobStoredSubject(old)); n != 1 {
		t.Errorf("replay of %s: %d blob_stored events, want the first one only", old, n)
	}

	// Idempotent: nothing more to delete.
	out = run("retention")
	if !strings.Contains(out, "deleted 0 step markers, 0 excused delivery records, 0 ingest uploads, 0 ingest leases\n") {
		t.Errorf("retention again: got\n%s\nwant nothing deleted", out)
	}
	if got := rows(); got != strings.Join(want, " ") {
		t.Errorf("after retention again: got rows\n%s\nwant\n%s", got, strings.Join(want, " "))
	}
}

// countOn counts the messages of UPLOADS on subject.
func countOn(t *testing.T, p *pipelinetest.Pipeline, subject string) int {
	t.Helper()
	s, err := p.JS.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return int(info.State.Subjects[subject])
}
