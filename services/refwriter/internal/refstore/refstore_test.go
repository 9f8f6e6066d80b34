package refstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/memblob"

	"github.com/blobref/blobref/internal/marker"
	"github.com/blobref/blobref/internal/steprun"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/refwriter/internal/refstore"
)

// refs is what a refstore test needs: a Postgres schema of its own with its
// marker store, and a bucket for the blobs the references point to.
type refs struct {
	pg      *testenv.Postgres
	markers *marker.Store
	bucket  *blob.Bucket
}

func setup(t *testing.T) *refs {
	t.Helper()
	pg := testenv.StartPostgres(t)
	return &refs{pg: pg, markers: marker.NewStore(pg.Pool), bucket: openBucket(t, "mem://")}
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

// t0 is an event time with the microsecond precision Postgres keeps.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)

// blobStored builds the blob_stored event blobwriter emits once it stored
// data for upload id of subject, requested at event time at.
func blobStored(t testing.TB, id, subject string, at time.Time, data []byte) *events.Event {
	t.Helper()
	req, err := events.NewRequested(events.Request{
		ID: id, Source: "/test", Subject: subject, ContentType: "image/png", Time: at, Data: data,
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

// record runs the step for ev as the runner does: the effect (without a
// bucket check), then the marker with Insert in its transaction.
func (r *refs) record(ev *events.Event) (won bool, err error) {
	ctx := context.Background()
	ref, err := (&refstore.Writer{}).Step().Effect(ctx, ev)
	if err != nil {
		return false, fmt.Errorf("effect: %w", err)
	}
	raw, err := json.Marshal(ref)
	if err != nil {
		return false, err
	}
	_, won, err = r.markers.Record(ctx, marker.Marker{
		UploadID: ev.ID, Step: refstore.StepName, Fingerprint: ev.SHA256, Result: raw,
	}, func(ctx context.Context, tx pgx.Tx) error {
		errs, err := refstore.Insert(ctx, tx, []steprun.Item[events.Reference]{{Event: ev, Result: ref}})
		return errors.Join(append(errs, err)...)
	})
	return won, err
}

// mustRecord records ev and fails the test unless it wins.
func (r *refs) mustRecord(t *testing.T, ev *events.Event) {
	t.Helper()
	if won, err := r.record(ev); err != nil || !won {
		t.Fatalf("record %s: got won=%v err=%v, want won", ev.ID, won, err)
	}
}

func (r *refs) current(t *testing.T, subject string) string {
	t.Helper()
	id, err := refstore.Current(context.Background(), r.pg.Pool, subject)
	if err != nil {
		t.Fatalf("Current(%s): %v", subject, err)
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
	var perm *steprun.PermanentError
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
	err := r.pg.Pool.QueryRow(context.Background(), `
		SELECT id, subject, blob_key, size, sha256, content_type, event_time, created_at
		FROM upload_refs`).Scan(&id, &subject, &key, &size, &sha, &ct, &eventTime, &created)
	if err != nil {
		t.Fatalf("read row: %v", err)
	}
	got := fmt.Sprintf("%s %s %s %d %s %s", id, subject, key, size, sha, ct)
	want := fmt.Sprintf("u1 users/42/avatar uploads/u1 %d %s image/png", len(data), ev.SHA256)
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
	if err := r.pg.Pool.QueryRow(context.Background(), `SELECT event_time FROM subject_refs WHERE subject = $1`, "users/42/avatar").Scan(&curTime); err != nil || !curTime.Equal(t0) {
		t.Errorf("subject_refs event_time: got %v (%v), want %v", curTime, err, t0)
	}
	if n := r.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'u1' AND step = $1`, refstore.StepName); n != 1 {
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
		effect    steprun.Effect[events.Reference]
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
