package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/blobrefctl/internal/cli"
	"github.com/blobref/blobref/tools/blobrefctl/internal/pipelinetest"
)

// blobrefctl stuck against the real pipeline: one upload of each kind of
// stuck, made by stopping the service that would finish it (or crashing
// ingest between its record and its publish), is listed with its reason; a
// completed upload is not.
func TestStuckListsEachKind(t *testing.T) {
	// No t.Parallel: t.Setenv.
	p := pipelinetest.New(t)
	bw := p.Start("blobwriter")
	rw := p.Start("refwriter")
	ingest := p.StartIngest()
	post := func(key string, wait time.Duration) string {
		t.Helper()
		u, err := pipelinetest.Post(ingest, "users/"+key, key, "bytes of "+key, wait)
		if err != nil {
			t.Fatalf("upload %s: %v", key, err)
		}
		return u.ID
	}

	done := post("done", 30*time.Second)
	p.PG.AwaitCount(t, time.Minute, 1, `SELECT count(*) FROM upload_refs WHERE id = $1`, done)

	// Stored, never referenced: refwriter is gone.
	rw.Stop(t)
	stored := post("stored", 0)
	p.PG.AwaitCount(t, time.Minute, 1, `SELECT count(*) FROM step_markers WHERE upload_id = $1 AND step = 'blob'`, stored)

	// Dead-lettered: a request whose claim-checked bytes were never staged.
	dead := testenv.ID("dead")
	sum := sha256.Sum256([]byte("never staged"))
	req, err := events.NewRequested(events.Request{
		ID: dead, Source: "/producer", Subject: "users/dead", ContentType: "text/plain",
		DataRef: events.ObjectRef("uploads-staging", dead), SHA256: hex.EncodeToString(sum[:]),
	})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, p.JS, req, dead)
	testenv.AwaitDeadLetters(t, p.JS, 1, time.Minute)

	// Published, never stored: blobwriter is gone.
	bw.Stop(t)
	published := post("published", 0)

	// Recorded, never published: ingest dies between the two.
	crashing := p.StartIngest("BLOBREF_FAILPOINTS=ingest/after-record=crash")
	if _, err := pipelinetest.Post(crashing, "users/unpublished", "unpublished", "bytes", 0); err == nil {
		t.Fatal("upload to an ingest that crashes after the record: got an answer")
	}
	if err := crashing.AwaitExit(t); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("ingest with the failpoint: exit %v, want killed", err)
	}
	unpublished := p.PG.Map(t, `SELECT idempotency_key, id FROM ingest_uploads WHERE published_at IS NULL`)["unpublished"]
	if unpublished == "" {
		t.Fatal("the crashed ingest recorded no unpublished upload")
	}

	t.Setenv("NATS_URL", p.NATS.URL())
	t.Setenv("DATABASE_URL", p.PG.URL)
	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := cli.Main(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("blobrefctl %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
		}
		return stdout.String()
	}

	want := map[string]string{
		unpublished: "unpublished", published: "not_stored", stored: "not_referenced", dead: "dead_letter",
	}
	var list []struct {
		ID, Kind, Why, Subject, Owner string
		Since                         time.Time
		AgeSeconds                    float64
		DeadLetter                    *struct{ Reason, Step string }
	}
	if err := json.Unmarshal([]byte(run("stuck", "--older-than", "0s", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range list {
		got[s.ID] = s.Kind
		if s.Why == "" || s.AgeSeconds < 0 || s.Since.IsZero() {
			t.Errorf("%s: why %q, age %gs, since %s; want a reason and an age", s.ID, s.Why, s.AgeSeconds, s.Since)
		}
		switch s.Kind {
		case "dead_letter":
			if s.DeadLetter == nil || s.DeadLetter.Reason != events.ReasonClaimMissing || !strings.Contains(s.Why, "claim_missing") {
				t.Errorf("%s: dead letter %+v, why %q; want claim_missing", s.ID, s.DeadLetter, s.Why)
			}
		case "unpublished":
			if s.Subject != "users/unpublished" || s.Owner != pipelinetest.IngestCaller {
				t.Errorf("%s: subject %q owner %q, want ingest's record", s.ID, s.Subject, s.Owner)
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("stuck --json: got %v, want %v", got, want)
	}

	table := run("stuck", "--older-than", "0s")
	for id, kind := range want {
		if !regexp.MustCompile(`(?m)^\S+ +` + kind + ` +` + id + ` `).MatchString(table) {
			t.Errorf("stuck: no line of %s as %s in\n%s", id, kind, table)
		}
	}
	if !strings.HasSuffix(table, "4 stuck uploads older than 0s\n") || strings.Contains(table, done) {
		t.Errorf("stuck: got\n%s\nwant the four and the count, and not the completed %s", table, done)
	}
	if out := run("stuck", "--older-than", "1h"); !strings.HasSuffix(out, "0 stuck uploads older than 1h0m0s\n") {
		t.Errorf("stuck --older-than 1h: got\n%s", out)
	}
	if out := run("stuck", "--older-than", "0s", "--limit", "1"); !strings.Contains(out, "more than --limit 1") {
		t.Errorf("stuck --limit 1: got\n%s", out)
	}
}
