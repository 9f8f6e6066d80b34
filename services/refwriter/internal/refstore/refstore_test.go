package refstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/memblob"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
	"github.com/blobref/blobref/services/refwriter/internal/refstore"
)

// refs is what a refstore test needs: a Postgres schema of its own, and a
// bucket for the blobs the references point to.
type refs struct {
	pg     *testenv.Postgres
	bucket *blob.Bucket
}

func setup(t *testing.T) *refs {
	t.Helper()
	return &refs{pg: testenv.StartPostgres(t), bucket: openBucket(t, "mem://")}
}

func openBucket(t *testing.T, url string) *blob.Bucket {
	t.Helper()
	b, err := blob.OpenBucket(context.Background(), url)
	if err != nil {
		t.Fatalf("OpenBucket(%s): %v", url, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// t0 is an event time with the microsecond precision Postgres keeps, a
// few days back: within the retention horizon, and with room after it for
// later events that are not in the future.
var t0 = time.Now().UTC().Truncate(time.Second).Add(-72*time.Hour + 123456*time.Microsecond)

// testOwner owns the subjects of the events blobStored builds: their source.
const testOwner = "/test"

// blobStored builds the blob_stored event blobwriter emits once it stored
// data for upload id of subject, requested at event time at by a producer
// on its own behalf.
func blobStored(t testing.TB, id, subject string, at time.Time, data []byte) *events.Event {
	t.Helper()
	return blobStoredBy(t, "", id, subject, at, data)
}

// blobStoredBy is blobStored for a request made on behalf of owner.
func blobStoredBy(t testing.TB, owner, id, subject string, at time.Time, data []byte) *events.Event {
	t.Helper()
	req, err := events.NewRequested(events.Request{
		ID: id, Source: "/test", Owner: owner, Subject: subject, ContentType: "image/png", Time: at, Data: data,
	})
	if err != nil {
		t.Fatalf("NewRequested: %v", err)
	}
	ev, err := events.NewBlobStored(req, events.Blob{
		Key: "uploads/" + id, Size: int64(len(data)), SHA256: req.SHA256, ContentType: req.ContentType,
	}, "/blobref/blobwriter")
	if err != nil {
		t.Fatalf("NewBlobStored: %v", err)
	}
	return ev
}

// putBlob stores the blob ev describes, with the sha256 metadata blobwriter
// writes.
func putBlob(t testing.TB, b *blob.Bucket, ev *events.Event, data []byte) {
	t.Helper()
	err := b.WriteAll(context.Background(), ev.Blob.Key, data, &blob.WriterOptions{
		ContentType: ev.Blob.ContentType,
		Metadata:    map[string]string{"sha256": ev.Blob.SHA256},
	})
	if err != nil {
		t.Fatalf("WriteAll %s: %v", ev.Blob.Key, err)
	}
}

// record runs the step for ev as the runner does (steptest.Work): the
// effect (without a bucket check), then the marker with Insert in its
// transaction. won says it recorded the marker.
func (r *refs) record(ev *events.Event) (won bool, err error) {
	return r.recordWith(&refstore.Writer{}, ev)
}

// recordWith is record with the effect of w.
func (r *refs) recordWith(w *refstore.Writer, ev *events.Event) (won bool, err error) {
	done, err := steptest.Work(context.Background(), r.pg.Pool, w.Step(), ev)
	return err == nil && done.Kind == step.Done, err
}

// mustRecord records ev and fails the test unless it wins.
func (r *refs) mustRecord(t *testing.T, ev *events.Event) {
	t.Helper()
	if won, err := r.record(ev); err != nil || !won {
		t.Fatalf("record %s: got won=%v err=%v, want won", ev.ID, won, err)
	}
}

// current is testOwner's current reference of subject.
func (r *refs) current(t *testing.T, subject string) string {
	t.Helper()
	return r.currentOf(t, testOwner, subject)
}

func (r *refs) currentOf(t *testing.T, owner, subject string) string {
	t.Helper()
	id, err := refstore.Current(context.Background(), r.pg.Pool, owner, subject)
	if err != nil {
		t.Fatalf("Current(%s, %s): %v", owner, subject, err)
	}
	return id
}

func (r *refs) xmin(t *testing.T, table, where string, args ...any) string {
	t.Helper()
	var x string
	if err := r.pg.Pool.QueryRow(context.Background(), `SELECT xmin::text FROM `+table+` WHERE `+where, args...).Scan(&x); err != nil {
		t.Fatalf("xmin of %s: %v", table, err)
	}
	return x
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func permanentReason(err error) (string, bool) {
	var perm *step.PermanentError
	if errors.As(err, &perm) {
		return perm.Reason, true
	}
	return "", false
}

func TestInsertWritesTheReference(t *testing.T) {
	t.Parallel()
	r := setup(t)
	data := []byte("avatar bytes")
	ev := blobStored(t, "u1", "users/42/avatar", t0, data)
	r.mustRecord(t, ev)

	var (
		id, subject, key, sha, ct string
		size                      int64
		eventTime, created        time.Time
	)
	var owner string
	err := r.pg.Pool.QueryRow(context.Background(), `
		SELECT id, owner, subject, blob_key, size, sha256, content_type, event_time, created_at
		FROM upload_refs`).Scan(&id, &owner, &subject, &key, &size, &sha, &ct, &eventTime, &created)
	if err != nil {
		t.Fatalf("read row: %v", err)
	}
	got := fmt.Sprintf("%s %s %s %s %d %s %s", id, owner, subject, key, size, sha, ct)
	want := fmt.Sprintf("u1 %s users/42/avatar uploads/u1 %d %s image/png", testOwner, len(data), ev.SHA256)
	if got != want {
		t.Errorf("row: got %s, want %s", got, want)
	}
	if !eventTime.Equal(t0) {
		t.Errorf("event_time: got %v, want %v", eventTime, t0)
	}
	if created.IsZero() {
		t.Error("created_at: got zero, want the insert time")
	}
	if cur := r.current(t, "users/42/avatar"); cur != "u1" {
		t.Errorf("current reference: got %q, want u1", cur)
	}
	var curTime time.Time
	if err := r.pg.Pool.QueryRow(context.Background(), `SELECT event_time FROM subject_refs WHERE owner = $1 AND subject = $2`, testOwner, "users/42/avatar").Scan(&curTime); err != nil || !curTime.Equal(t0) {
		t.Errorf("subject_refs event_time: got %v (%v), want %v", curTime, err, t0)
	}
	if n := r.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'u1' AND step = $1`, events.StepRef); n != 1 {
		t.Errorf("markers: got %d, want 1", n)
	}
	if cur := r.current(t, "users/nobody/avatar"); cur != "" {
		t.Errorf("current reference of an unknown subject: got %q, want none", cur)
	}

	// Recording again loses to the marker and writes nothing.
	before := r.xmin(t, "upload_refs", "id = 'u1'")
	if won, err := r.record(ev); err != nil || won {
		t.Errorf("second record: got won=%v err=%v, want lost", won, err)
	}
	if after := r.xmin(t, "upload_refs", "id = 'u1'"); after != before {
		t.Errorf("row xmin after a second record: got %s, want %s (untouched)", after, before)
	}
}

func TestCurrentReferenceMovesForwardOnly(t *testing.T) {
	t.Parallel()
	r := setup(t)
	const subject = "users/7/avatar"
	older := blobStored(t, "older", subject, t0, []byte("1"))
	newer := blobStored(t, "newer", subject, t0.Add(time.Microsecond), []byte("2"))
	newest := blobStored(t, "newest", subject, t0.Add(time.Hour), []byte("3"))

	r.mustRecord(t, newer)
	if cur := r.current(t, subject); cur != "newer" {
		t.Fatalf("current after newer: got %q, want newer", cur)
	}
	r.mustRecord(t, newest)
	if cur := r.current(t, subject); cur != "newest" {
		t.Fatalf("current after newest: got %q, want newest", cur)
	}
	// An older event processed late is recorded but does not move the
	// current reference back.
	r.mustRecord(t, older)
	if cur := r.current(t, subject); cur != "newest" {
		t.Errorf("current after a late older event: got %q, want newest", cur)
	}
	if n := r.pg.Count(t, `SELECT count(*) FROM upload_refs WHERE subject = $1`, subject); n != 3 {
		t.Errorf("references of %s: got %d, want 3", subject, n)
	}
	if cur := r.current(t, "users/8/avatar"); cur != "" {
		t.Errorf("current of another subject: got %q, want none", cur)
	}
}

func TestEqualEventTimesBreakTiesByID(t *testing.T) {
	t.Parallel()
	r := setup(t)
	// Whatever the processing order, the greater upload id wins a tie.
	for _, order := range [][]string{{"a", "b"}, {"b", "a"}} {
		subject := "users/" + order[0] + order[1] + "/avatar"
		for _, id := range order {
			r.mustRecord(t, blobStored(t, order[0]+order[1]+"-"+id, subject, t0, []byte(id)))
		}
		want := order[0] + order[1] + "-b"
		if cur := r.current(t, subject); cur != want {
			t.Errorf("processed %v: current got %q, want %q", order, cur, want)
		}
	}
}

func TestConcurrentInsertsKeepTheNewest(t *testing.T) {
	t.Parallel()
	r := setup(t)
	const (
		subject = "users/busy/avatar"
		n       = 20
	)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		ev := blobStored(t, fmt.Sprintf("c%02d", i), subject, t0.Add(time.Duration(i*7%n)*time.Second), []byte{byte(i)})
		wg.Go(func() {
			won, err := r.record(ev)
			if err == nil && !won {
				err = errors.New("lost to a marker that should not exist")
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("c%02d: %v", i, err)
		}
	}
	// i*7 mod 20 is 19 for i = 17: the latest event time.
	if cur := r.current(t, subject); cur != "c17" {
		t.Errorf("current: got %q, want c17 (the latest event time)", cur)
	}
}

func TestRowAlreadyPresent(t *testing.T) {
	t.Parallel()
	r := setup(t)
	ctx := context.Background()
	same := blobStored(t, "same", "users/1/avatar", t0, []byte("same bytes"))
	other := blobStored(t, "other", "users/2/avatar", t0, []byte("new bytes"))
	theirs := blobStored(t, "theirs", "users/3/avatar", t0, []byte("their bytes"))
	moved := blobStored(t, "moved", "users/4/avatar", t0, []byte("moved bytes"))
	for _, row := range []struct {
		id, subject, sha string
	}{
		{"same", "users/1/avatar", same.SHA256},
		{"other", "users/2/avatar", digest([]byte("old bytes"))},
	} {
		_, err := r.pg.Pool.Exec(ctx, `
			INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time)
			VALUES ($1, $2, 'uploads/' || $1, 9, $3, 'image/png', $4)`, row.id, row.subject, row.sha, t0)
		if err != nil {
			t.Fatalf("insert by hand: %v", err)
		}
	}
	// Rows of the same digest that belong to another owner or subject.
	for _, row := range []struct{ id, owner, subject, sha string }{
		{"theirs", "alice", "users/3/avatar", theirs.SHA256},
		{"moved", testOwner, "users/9/avatar", moved.SHA256},
	} {
		_, err := r.pg.Pool.Exec(ctx, `
			INSERT INTO upload_refs (id, owner, subject, blob_key, size, sha256, content_type, event_time)
			VALUES ($1, $2, $3, 'uploads/' || $1, 9, $4, 'image/png', $5)`, row.id, row.owner, row.subject, row.sha, t0)
		if err != nil {
			t.Fatalf("insert by hand: %v", err)
		}
	}
	for _, ev := range []*events.Event{theirs, moved} {
		won, err := r.record(ev)
		if reason, ok := permanentReason(err); !ok || reason != events.ReasonConflict || won {
			t.Errorf("%s of another owner or subject: got won=%v err=%v, want a PermanentError with reason %s", ev.ID, won, err, events.ReasonConflict)
		}
	}
	sameXmin := r.xmin(t, "upload_refs", "id = 'same'")
	otherXmin := r.xmin(t, "upload_refs", "id = 'other'")

	if won, err := r.record(same); err != nil || !won {
		t.Errorf("same sha256: got won=%v err=%v, want won without error", won, err)
	}
	if x := r.xmin(t, "upload_refs", "id = 'same'"); x != sameXmin {
		t.Errorf("same sha256: row xmin got %s, want %s (untouched)", x, sameXmin)
	}

	won, err := r.record(other)
	if reason, ok := permanentReason(err); !ok || reason != events.ReasonConflict || won {
		t.Errorf("other sha256: got won=%v err=%v, want a PermanentError with reason %s", won, err, events.ReasonConflict)
	}
	if x := r.xmin(t, "upload_refs", "id = 'other'"); x != otherXmin {
		t.Errorf("other sha256: row xmin got %s, want %s (untouched)", x, otherXmin)
	}
	if n := r.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'other'`); n != 0 {
		t.Errorf("other sha256: markers got %d, want 0 (rolled back with the conflict)", n)
	}
	if cur := r.current(t, "users/2/avatar"); cur != "" {
		t.Errorf("other sha256: current reference got %q, want none", cur)
	}
}

// failingBucket fails every lookup as an unreachable store would.
type failingBucket struct{}

func (failingBucket) Attributes(context.Context, string) (*blob.Attributes, error) {
	return nil, errors.New("connection refused")
}

func (failingBucket) IsAccessible(context.Context) (bool, error) {
	return false, errors.New("connection refused")
}

func TestCheck(t *testing.T) {
	t.Parallel()
	r := setup(t)
	ctx := context.Background()
	data := []byte("the stored bytes")

	present := blobStored(t, "present", "users/1/avatar", t0, data)
	putBlob(t, r.bucket, present, data)

	missing := blobStored(t, "missing", "users/1/avatar", t0, data)

	// The object holds other bytes than the event describes.
	wrongSize := blobStored(t, "size", "users/1/avatar", t0, data)
	putBlob(t, r.bucket, wrongSize, append([]byte("more "), data...))

	wrongSHA := blobStored(t, "sha", "users/1/avatar", t0, data)
	if err := r.bucket.WriteAll(ctx, wrongSHA.Blob.Key, data, &blob.WriterOptions{
		Metadata: map[string]string{"sha256": digest([]byte("other bytes"))},
	}); err != nil {
		t.Fatal(err)
	}
	noSHA := blobStored(t, "nosha", "users/1/avatar", t0, data)
	if err := r.bucket.WriteAll(ctx, noSHA.Blob.Key, data, nil); err != nil {
		t.Fatal(err)
	}

	checked := (&refstore.Writer{Bucket: r.bucket}).Step().Effect
	tests := []struct {
		name      string
		effect    step.Effect[events.Reference]
		ev        *events.Event
		permanent string // "" with wantErr: a transient error
		wantErr   bool
	}{
		{"present and matching", checked, present, "", false},
		{"missing blob", checked, missing, "", true},
		{"size differs", checked, wrongSize, events.ReasonDigestMismatch, true},
		{"sha256 differs", checked, wrongSHA, events.ReasonDigestMismatch, true},
		{"no sha256 metadata", checked, noSHA, events.ReasonDigestMismatch, true},
		{"bucket unreachable", (&refstore.Writer{Bucket: failingBucket{}}).Step().Effect, present, "", true},
		{"no bucket to check", (&refstore.Writer{}).Step().Effect, missing, "", false},
	}
	for _, tt := range tests {
		ref, err := tt.effect(ctx, tt.ev)
		reason, permanent := permanentReason(err)
		switch {
		case !tt.wantErr && err != nil:
			t.Errorf("%s: got %v, want no error", tt.name, err)
		case tt.wantErr && err == nil:
			t.Errorf("%s: got no error, want one", tt.name)
		case tt.wantErr && tt.permanent == "" && permanent:
			t.Errorf("%s: got permanent %s, want a transient error", tt.name, reason)
		case tt.permanent != "" && reason != tt.permanent:
			t.Errorf("%s: got %v, want a PermanentError with reason %s", tt.name, err, tt.permanent)
		}
		if tt.wantErr {
			continue
		}
		want := events.Reference{ID: tt.ev.ID, Subject: tt.ev.Subject, Blob: *tt.ev.Blob, EventTime: tt.ev.Time}
		if ref.ID != want.ID || ref.Subject != want.Subject || ref.Blob != want.Blob || !ref.EventTime.Equal(want.EventTime) {
			t.Errorf("%s: got %+v, want %+v", tt.name, ref, want)
		}
	}
}

// Two owners who use the same subject each keep their own current
// reference: neither upload moves the other's.
func TestOwnersKeepTheirCurrentReferences(t *testing.T) {
	t.Parallel()
	r := setup(t)
	const subject = "users/42/avatar"
	r.mustRecord(t, blobStoredBy(t, "alice", "a1", subject, t0, []byte("alice 1")))
	r.mustRecord(t, blobStoredBy(t, "mallory", "m1", subject, t0.Add(time.Hour), []byte("mallory")))
	if cur := r.currentOf(t, "alice", subject); cur != "a1" {
		t.Errorf("alice's current reference after mallory's newer upload: got %q, want a1", cur)
	}
	if cur := r.currentOf(t, "mallory", subject); cur != "m1" {
		t.Errorf("mallory's current reference: got %q, want m1", cur)
	}
	r.mustRecord(t, blobStoredBy(t, "alice", "a2", subject, t0.Add(2*time.Hour), []byte("alice 2")))
	if a, m := r.currentOf(t, "alice", subject), r.currentOf(t, "mallory", subject); a != "a2" || m != "m1" {
		t.Errorf("after alice's newer upload: alice %q, mallory %q; want a2, m1", a, m)
	}
	if cur := r.current(t, subject); cur != "" {
		t.Errorf("current reference of the subject's source owner: got %q, want none", cur)
	}
	owners := r.pg.Map(t, `SELECT id, owner FROM upload_refs`)
	if want := map[string]string{"a1": "alice", "m1": "mallory", "a2": "alice"}; !maps.Equal(owners, want) {
		t.Errorf("owners of the rows: got %v, want %v", owners, want)
	}
}

// The effect refuses, as invalid, a blob other than the upload's own key and
// an event time too far in the future; nothing is recorded for either.
func TestCheckRefusesForeignKeysAndFutureTimes(t *testing.T) {
	t.Parallel()
	r := setup(t)
	now := t0
	clock := func() time.Time { return now }
	withKey := func(ev *events.Event, key string) *events.Event {
		t.Helper()
		b := *ev.Blob
		b.Key = key
		req, err := events.NewRequested(events.Request{
			ID: ev.ID, Source: "/test", Subject: ev.Subject, ContentType: "image/png", Time: ev.Time, DataRef: "nats-object://b/" + ev.ID, SHA256: ev.SHA256,
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := events.NewBlobStored(req, b, "/blobref/blobwriter")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		w      *refstore.Writer
		ev     *events.Event
		refuse bool
	}{
		{"another upload's object", &refstore.Writer{}, withKey(blobStored(t, "k1", "s/1", t0, []byte("1")), "uploads/victim"), true},
		{"outside the prefix", &refstore.Writer{}, withKey(blobStored(t, "k2", "s/2", t0, []byte("2")), "private/k2"), true},
		{"the id as a suffix", &refstore.Writer{}, withKey(blobStored(t, "k3", "s/3", t0, []byte("3")), "uploads/x/k3"), true},
		{"the default prefix under another", &refstore.Writer{KeyPrefix: "blobs/"}, blobStored(t, "k4", "s/4", t0, []byte("4")), true},
		{"the configured prefix", &refstore.Writer{KeyPrefix: "blobs/"}, withKey(blobStored(t, "k5", "s/5", t0, []byte("5")), "blobs/k5"), false},
		{"six minutes ahead", &refstore.Writer{Now: clock}, blobStored(t, "t1", "s/t", t0.Add(6*time.Minute), []byte("t1")), true},
		{"in 2099", &refstore.Writer{Now: clock}, blobStored(t, "t2", "s/t", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), []byte("t2")), true},
		{"five minutes ahead", &refstore.Writer{Now: clock}, blobStored(t, "t3", "s/t", t0.Add(5*time.Minute), []byte("t3")), false},
		{"an hour ahead, an hour allowed", &refstore.Writer{Now: clock, MaxClockSkew: time.Hour}, blobStored(t, "t4", "s/u", t0.Add(time.Hour), []byte("t4")), false},
	} {
		won, err := r.recordWith(tc.w, tc.ev)
		if !tc.refuse {
			if err != nil || !won {
				t.Errorf("%s: got won=%v err=%v, want recorded", tc.name, won, err)
			}
			continue
		}
		if events.ReasonOf(err) != events.ReasonInvalid {
			if reason, ok := permanentReason(err); !ok || reason != events.ReasonInvalid {
				t.Errorf("%s: got %v, want a permanent error with reason %s", tc.name, err, events.ReasonInvalid)
			}
		}
		if n := r.pg.Count(t, `SELECT count(*) FROM upload_refs WHERE id = $1`, tc.ev.ID); n != 0 {
			t.Errorf("%s: %d rows, want none", tc.name, n)
		}
	}
	if cur := r.current(t, "s/t"); cur != "t3" {
		t.Errorf("current reference of s/t: got %q, want t3 (the future events are not recorded)", cur)
	}
}

// The completed event of a recorded reference is refused as a conflict for
// an event that names another owner or subject under the same id.
func TestNextRefusesAnotherOwnerOrSubject(t *testing.T) {
	t.Parallel()
	next := (&refstore.Writer{}).Step().Emit
	alice := blobStoredBy(t, "alice", "n1", "users/1/avatar", t0, []byte("x"))
	recorded := events.Reference{ID: "n1", Owner: "alice", Subject: "users/1/avatar", Blob: *alice.Blob, EventTime: t0}
	if c, err := next(alice, recorded); err != nil || c.Owner != "alice" || c.Ref.Owner != "alice" {
		t.Fatalf("the recorded owner: got %+v, %v; want a completed event of alice", c, err)
	}
	for name, ev := range map[string]*events.Event{
		"another owner":   blobStoredBy(t, "mallory", "n1", "users/1/avatar", t0, []byte("x")),
		"another subject": blobStoredBy(t, "alice", "n1", "users/2/avatar", t0, []byte("x")),
	} {
		_, err := next(ev, recorded)
		if reason, ok := permanentReason(err); !ok || reason != events.ReasonConflict {
			t.Errorf("%s: got %v, want a PermanentError with reason %s", name, err, events.ReasonConflict)
		}
	}
	// A reference recorded before owners carries none: it takes the event's.
	legacy := recorded
	legacy.Owner = ""
	if c, err := next(alice, legacy); err != nil || c.Ref.Owner != "alice" {
		t.Errorf("a reference recorded without an owner: got %+v, %v; want it completed for alice", c, err)
	}
}
