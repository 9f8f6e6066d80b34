package e2e

// Hostile producers against the real binaries: events that try to take
// another owner's subject or upload, to bring bytes that are not theirs, or
// to date themselves in the future end as dead letters (or, for a subject
// two owners use, as two separate references) and leave the stores as they
// were.

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// ownedEvent is u's request event on behalf of owner.
func (u upload) ownedEvent(t *testing.T, owner string) *events.Event {
	t.Helper()
	ev, err := events.NewRequested(events.Request{
		ID: u.ID, Source: "/e2e", Owner: owner, Subject: u.Subject, ContentType: "application/octet-stream", Time: u.Time, Data: u.Data,
	})
	if err != nil {
		t.Fatalf("NewRequested: %v", err)
	}
	return ev
}

// currentOf is owner's current reference of subject, "" when none.
func (p *pipeline) currentOf(owner, subject string) string {
	p.t.Helper()
	refs := p.pg.Map(p.t, `SELECT owner, upload_id FROM subject_refs WHERE subject = $1`, subject)
	return refs[owner]
}

// A second owner's newer upload to a subject another owner uses leaves the
// first owner's current reference where it was; republishing the first
// owner's upload as the second owner is a conflict and changes nothing.
func TestSubjectTakeoverLeavesTheOwnersReference(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")
	const subject = "users/42/avatar"

	alice := newUpload("alice1", 100)
	alice.Subject, alice.Time = subject, alice.Time.Add(-time.Hour)
	testenv.Publish(t, p.js, alice.ownedEvent(t, "alice"), alice.ID)
	p.awaitCompleted(1, time.Minute)

	mallory := newUpload("mallory1", 100)
	mallory.Subject = subject
	testenv.Publish(t, p.js, mallory.ownedEvent(t, "mallory"), mallory.ID)
	p.awaitCompleted(1, time.Minute)

	if a, m := p.currentOf("alice", subject), p.currentOf("mallory", subject); a != alice.ID || m != mallory.ID {
		t.Errorf("current references of %s: alice %q, mallory %q; want %s and %s", subject, a, m, alice.ID, mallory.ID)
	}
	rows := p.rowVersions()

	// alice's upload again, claimed by mallory, with a newer time.
	steal := alice
	steal.Time = time.Now().UTC().Truncate(time.Microsecond)
	testenv.Publish(t, p.js, steal.ownedEvent(t, "mallory"), "")
	d, _ := testenv.AwaitDeadLetter(t, p.js, events.BlobStoredSubject(alice.ID), time.Minute)
	if d.Reason != events.ReasonConflict || d.Step != "ref" {
		t.Errorf("mallory's claim of alice's upload: dead letter %+v, want %s at step ref", d, events.ReasonConflict)
	}
	if a, m := p.currentOf("alice", subject), p.currentOf("mallory", subject); a != alice.ID || m != mallory.ID {
		t.Errorf("after the claim: alice %q, mallory %q; want %s and %s", a, m, alice.ID, mallory.ID)
	}
	if after := p.rowVersions(); !maps.Equal(after, rows) {
		t.Errorf("reference rows were rewritten by the claim")
	}
	owners := p.pg.Map(t, `SELECT id, owner FROM upload_refs`)
	if want := map[string]string{alice.ID: "alice", mallory.ID: "mallory"}; !maps.Equal(owners, want) {
		t.Errorf("owners of the rows: got %v, want %v", owners, want)
	}
	p.checkInvariants([]upload{alice, mallory})
}

// A claim check that names another upload's staged bytes, another bucket
// or a link, and a request dated in 2099, each end as an invalid dead
// letter with no object and no row; the honest upload completes.
func TestHostileRequestsAreInvalid(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")
	ctx := context.Background()

	victim := newUpload("victim1", 2<<20)
	p.publishClaimChecked(victim)
	p.awaitCompleted(1, time.Minute)

	staging, err := p.js.ObjectStore(ctx, "uploads-staging")
	if err != nil {
		t.Fatal(err)
	}
	target, err := staging.PutBytes(ctx, "target1", victim.Data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := staging.AddLink(ctx, "link1", target); err != nil {
		t.Fatal(err)
	}
	other, err := p.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "other-bucket"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.PutBytes(ctx, "own1", victim.Data); err != nil {
		t.Fatal(err)
	}
	claim := func(id, dataref string) *events.Event {
		ev, err := events.NewRequested(events.Request{
			ID: id, Source: "/e2e", Subject: "users/mallory/avatar", ContentType: "application/octet-stream",
			DataRef: dataref, SHA256: victim.sha(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	future := newUpload("future1", 100)
	future.Time = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	hostile := map[string]*events.Event{
		"steal1":  claim("steal1", "nats-object://uploads-staging/"+victim.ID),
		"own1":    claim("own1", "nats-object://other-bucket/own1"),
		"link1":   claim("link1", "nats-object://uploads-staging/link1"),
		"future1": future.event(t),
	}
	for id, ev := range hostile {
		testenv.Publish(t, p.js, ev, id)
	}
	dead := testenv.AwaitDeadLetters(t, p.js, len(hostile), time.Minute)
	for id := range hostile {
		d := dead[events.RequestedSubject(id)]
		if d.Reason != events.ReasonInvalid || d.Step != "blob" || d.Deliveries != 1 {
			t.Errorf("%s: dead letter %+v, want %s at step blob after one delivery", id, d, events.ReasonInvalid)
		}
	}
	if n := p.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id <> $1`, victim.ID); n != 0 {
		t.Errorf("markers of the hostile requests: got %d, want 0", n)
	}
	p.checkInvariants([]upload{victim})
}

// refwriter refuses a blob_stored event whose blob is another upload's
// object, though the object is there with the digest the event names.
func TestRefwriterRefusesAForeignBlobKey(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")

	victim := newUpload("victim2", 100)
	p.publish(victim, victim.ID)
	p.awaitCompleted(1, time.Minute)

	req := newUpload("foreign2", 100)
	req.Data = victim.Data
	stored, err := events.NewBlobStored(req.event(t), events.Blob{
		Key: "uploads/" + victim.ID, Size: int64(len(victim.Data)), SHA256: victim.sha(), ContentType: "application/octet-stream",
	}, "/e2e/blobwriter")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, p.js, stored, "")
	d, _ := testenv.AwaitDeadLetter(t, p.js, events.BlobStoredSubject(req.ID), time.Minute)
	if d.Reason != events.ReasonInvalid || d.Step != "ref" {
		t.Errorf("dead letter %+v, want %s at step ref", d, events.ReasonInvalid)
	}
	p.checkInvariants([]upload{victim})
}
