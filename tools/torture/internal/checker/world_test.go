package checker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/blobref/blobref/internal/blobwatch"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/tools/torture/internal/checker"
)

// t0 is the event time the uploads of a world count from.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const contentType = "application/octet-stream"

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// content is the bytes of upload id; other is bytes of the same length
// that are not.
func content(id string) []byte { return []byte("bytes of " + id) }
func other(id string) []byte   { return []byte("BYTES OF " + id) }

// upload is an upload of content(id) a producer published directly, at
// t0+at.
func upload(id, subject string, at time.Duration) checker.Upload {
	b := content(id)
	return checker.Upload{ID: id, Subject: subject, SHA256: sum(b), Size: int64(len(b)), Time: t0.Add(at), Via: "direct"}
}

// world is the stores a run leaves for the checker, real ones: a migrated
// Postgres schema with the harness's audit installed, a JetStream server
// with the pipeline's streams, and a file:// bucket whose uploads/ directory
// blobwatch watches. Its methods write to them what the pipeline writes, or
// what a broken pipeline would.
type world struct {
	t        *testing.T
	ctx      context.Context
	pg       *testenv.Postgres
	js       jetstream.JetStream
	dir      string
	bucket   *blob.Bucket
	watch    *blobwatch.Watcher
	accepted []checker.Upload
	poison   []checker.Poison
	deadSeq  uint64
}

// newWorld builds the stores. before, when not nil, runs before blobwatch
// starts: what was in the bucket before the run.
func newWorld(t *testing.T, before func(w *world)) *world {
	t.Helper()
	w := &world{t: t, ctx: context.Background(), pg: testenv.StartPostgres(t), dir: t.TempDir()}
	_, w.js = testenv.StartNATS(t).Connect()
	w.exec(checker.AuditDDL)
	uploads := filepath.Join(w.dir, "uploads")
	if err := os.MkdirAll(uploads, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	if w.bucket, err = fileblob.OpenBucket(w.dir, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.bucket.Close() })
	if before != nil {
		before(w)
	}
	if w.watch, err = blobwatch.Watch(uploads); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if w.watch != nil {
			_, _ = w.watch.Close()
		}
	})
	return w
}

func (w *world) exec(sql string, args ...any) {
	w.t.Helper()
	if _, err := w.pg.Pool.Exec(w.ctx, sql, args...); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
}

// accept records u as accepted by the run (ingest answered 2xx, or
// JetStream acknowledged its request).
func (w *world) accept(u checker.Upload) { w.accepted = append(w.accepted, u) }

// complete accepts u and runs the pipeline for it: blobwriter's object and
// marker, refwriter's row, marker and pointer, the completed event.
func (w *world) complete(u checker.Upload) {
	w.t.Helper()
	w.accept(u)
	w.storeBlob(u)
	w.storeRef(rowOf(u), u.SHA256, true)
	w.publishCompleted(u)
}

// putObject writes data to uploads/<id> through fileblob as blobwriter
// does (its sha256 in the metadata); ifNotExist false overwrites.
func (w *world) putObject(id string, data []byte, ifNotExist bool) {
	w.t.Helper()
	err := w.bucket.WriteAll(w.ctx, "uploads/"+id, data, &blob.WriterOptions{
		ContentType: contentType, Metadata: map[string]string{"sha256": sum(data)}, IfNotExist: ifNotExist,
	})
	if err != nil {
		w.t.Fatalf("put uploads/%s: %v", id, err)
	}
}

func (w *world) deleteObject(id string) {
	w.t.Helper()
	if err := w.bucket.Delete(w.ctx, "uploads/"+id); err != nil {
		w.t.Fatalf("delete uploads/%s: %v", id, err)
	}
}

// marker records that step of upload id finished with fingerprint fp.
func (w *world) marker(id, step, fp string) {
	w.t.Helper()
	w.exec(`INSERT INTO step_markers (upload_id, step, fingerprint, result) VALUES ($1, $2, $3, '{}')`, id, step, fp)
}

// storeBlob is blobwriter's side effect and its record: the object, once,
// then the blob marker.
func (w *world) storeBlob(u checker.Upload) {
	w.t.Helper()
	w.putObject(u.ID, content(u.ID), true)
	w.marker(u.ID, "blob", u.SHA256)
}

// refRow is an upload_refs row.
type refRow struct {
	id, subject, key, sha string
	size                  int64
	at                    time.Time
}

// rowOf is the row refwriter records for u. An upload accepted over HTTP
// has no time of the producer's; ingest chose t0.
func rowOf(u checker.Upload) refRow {
	at := u.Time
	if at.IsZero() {
		at = t0
	}
	return refRow{id: u.ID, subject: u.Subject, key: "uploads/" + u.ID, sha: u.SHA256, size: u.Size, at: at}
}

// storeRef is refwriter's transaction: the row, the ref marker with
// fingerprint fp and, with move, the subject's current reference moved
// forward in (event_time, id) only, with refwriter's statement.
func (w *world) storeRef(r refRow, fp string, move bool) {
	w.t.Helper()
	ref, err := json.Marshal(events.Reference{ID: r.id, Subject: r.subject, EventTime: r.at,
		Blob: events.Blob{Key: r.key, Size: r.size, SHA256: r.sha, ContentType: contentType}})
	if err != nil {
		w.t.Fatal(err)
	}
	err = pgx.BeginFunc(w.ctx, w.pg.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(w.ctx, `INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.id, r.subject, r.key, r.size, r.sha, contentType, r.at); err != nil {
			return err
		}
		if _, err := tx.Exec(w.ctx, `INSERT INTO step_markers (upload_id, step, fingerprint, result) VALUES ($1, 'ref', $2, $3)`,
			r.id, fp, ref); err != nil {
			return err
		}
		if !move {
			return nil
		}
		_, err := tx.Exec(w.ctx, `
			INSERT INTO subject_refs AS cur (owner, subject, upload_id, event_time) VALUES ('', $1, $2, $3)
			ON CONFLICT (owner, subject) DO UPDATE
			SET upload_id = EXCLUDED.upload_id, event_time = EXCLUDED.event_time, updated_at = now()
			WHERE (cur.event_time, cur.upload_id) < (EXCLUDED.event_time, EXCLUDED.upload_id)`, r.subject, r.id, r.at)
		return err
	})
	if err != nil {
		w.t.Fatalf("reference %s: %v", r.id, err)
	}
}

// request is the requested event of upload id with data inline.
func (w *world) request(id, subject string, data []byte) *events.Event {
	w.t.Helper()
	ev, err := events.NewRequested(events.Request{ID: id, Source: "/checker-test", Subject: subject,
		ContentType: contentType, Time: t0, Data: data})
	if err != nil {
		w.t.Fatal(err)
	}
	return ev
}

// publishCompleted publishes the completed event of u, built from its
// requested and blob_stored events as the services build it, as a new
// message each time (a republish flows down the chain again).
func (w *world) publishCompleted(u checker.Upload) {
	w.t.Helper()
	r := rowOf(u)
	req := w.request(u.ID, u.Subject, content(u.ID))
	req.Time = r.at
	b := events.Blob{Key: r.key, Size: u.Size, SHA256: u.SHA256, ContentType: contentType}
	stored, err := events.NewBlobStored(req, b, "/blobref/blobwriter")
	if err != nil {
		w.t.Fatal(err)
	}
	done, err := events.NewCompleted(stored, events.Reference{ID: u.ID, Subject: u.Subject, Blob: b, EventTime: r.at}, "/blobref/refwriter")
	if err != nil {
		w.t.Fatal(err)
	}
	testenv.Publish(w.t, w.js, done, "")
}

// deadLetter dead-letters ev as the step runner does, with reason (none
// when "").
func (w *world) deadLetter(ev *events.Event, reason string) {
	w.t.Helper()
	msg, err := ev.Msg(ev.ID)
	if err != nil {
		w.t.Fatal(err)
	}
	w.deadSeq++
	d := events.DeadLetter{Reason: reason, Step: "blob", Error: "injected", Subject: msg.Subject,
		Stream: events.StreamName, Sequence: w.deadSeq, Deliveries: 1}
	testenv.PublishMsg(w.t, w.js, events.DeadLetterMsg(d, msg.Header, msg.Data, ""))
}

// check stops watching the bucket and runs the checker over the stores.
func (w *world) check() *checker.Report {
	w.t.Helper()
	counts, err := w.watch.Close()
	w.watch = nil
	if err != nil {
		w.t.Fatal(err)
	}
	rep, err := checker.Check(w.ctx, checker.Input{Accepted: w.accepted, Poison: w.poison,
		DB: w.pg.Pool, JS: w.js, BucketDir: w.dir, Blob: counts})
	if err != nil {
		w.t.Fatalf("check: %v", err)
	}
	return rep
}
