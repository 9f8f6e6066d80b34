package uploadview_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/pkg/events"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// world is one test's Postgres schema and JetStream server, and a view of
// them through a read-only pool. The helpers write what the pipeline's
// services write: ingest's records, the steps' markers, references, events
// and dead letters.
type world struct {
	t    *testing.T
	pg   *testenv.Postgres
	js   jetstream.JetStream
	view *uploadview.View
}

func setup(t *testing.T) *world {
	t.Helper()
	_, js := testenv.StartNATS(t).Connect()
	pg := testenv.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := uploadview.OpenPool(ctx, pg.URL)
	if err != nil {
		t.Fatalf("OpenPool: %v", err)
	}
	t.Cleanup(pool.Close)
	return &world{t: t, pg: pg, js: js, view: &uploadview.View{Pool: pool, JS: js}}
}

func (w *world) exec(sql string, args ...any) {
	w.t.Helper()
	if _, err := w.pg.Pool.Exec(context.Background(), sql, args...); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
}

// upload is one upload a test drives through the pipeline's records.
type upload struct {
	w       *world
	id      string
	subject string
	data    []byte
	req     *events.Event
	stored  *events.Event
}

func (w *world) upload(id, subject string) *upload {
	w.t.Helper()
	u := &upload{w: w, id: id, subject: subject, data: []byte("bytes of " + id)}
	req, err := events.NewRequested(events.Request{ID: id, Source: "/test", Subject: subject, ContentType: "text/plain", Data: u.data})
	if err != nil {
		w.t.Fatal(err)
	}
	u.req = req
	return u
}

// record writes ingest's record of the upload, created ago, for caller
// under key; published says whether JetStream acknowledged its request.
func (u *upload) record(caller, key string, ago time.Duration, published bool) *upload {
	u.w.t.Helper()
	u.w.exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, created_at, published_at, publish_count)
		VALUES ($1, $2, $3, $4, 'text/plain', $5, $6, now() - $7::interval, CASE WHEN $8 THEN now() - $7::interval END, CASE WHEN $8 THEN 1 ELSE 0 END)`,
		u.id, caller, key, u.subject, len(u.data), u.req.SHA256, ago.String(), published)
	return u
}

// publish stores the request in UPLOADS as a new message.
func (u *upload) publish() *upload {
	u.w.t.Helper()
	testenv.Publish(u.w.t, u.w.js, u.req, nats.NewInbox())
	return u
}

func (u *upload) blob() events.Blob {
	return events.Blob{Key: "uploads/" + u.id, Size: int64(len(u.data)), SHA256: u.req.SHA256, ContentType: "text/plain"}
}

// store records the blob step's marker, done ago, and publishes its event.
func (u *upload) store(ago time.Duration) *upload {
	u.w.t.Helper()
	result, _ := json.Marshal(u.blob())
	u.w.exec(`INSERT INTO step_markers (upload_id, step, fingerprint, result, created_at) VALUES ($1, 'blob', $2, $3, now() - $4::interval)`,
		u.id, u.req.SHA256, result, ago.String())
	stored, err := events.NewBlobStored(u.req, u.blob(), "/blobwriter")
	if err != nil {
		u.w.t.Fatal(err)
	}
	u.stored = stored
	testenv.Publish(u.w.t, u.w.js, stored, nats.NewInbox())
	return u
}

// complete records the reference with its marker and current pointer, as
// refwriter does, and publishes the completed event.
func (u *upload) complete() *upload {
	u.w.t.Helper()
	ref := events.Reference{ID: u.id, Owner: u.req.Owner, Subject: u.subject, Blob: u.blob(), EventTime: u.req.Time}
	result, _ := json.Marshal(ref)
	u.w.exec(`INSERT INTO step_markers (upload_id, step, fingerprint, result) VALUES ($1, 'ref', $2, $3)`, u.id, u.req.SHA256, result)
	u.w.exec(`INSERT INTO upload_refs (id, owner, subject, blob_key, size, sha256, content_type, event_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		u.id, ref.Owner, ref.Subject, ref.Blob.Key, ref.Blob.Size, ref.Blob.SHA256, ref.Blob.ContentType, ref.EventTime)
	u.w.exec(`INSERT INTO subject_refs (owner, subject, upload_id, event_time) VALUES ($1, $2, $3, $4)
		ON CONFLICT (owner, subject) DO UPDATE SET upload_id = excluded.upload_id, event_time = excluded.event_time`,
		ref.Owner, ref.Subject, u.id, ref.EventTime)
	completed, err := events.NewCompleted(u.stored, ref, "/refwriter")
	if err != nil {
		u.w.t.Fatal(err)
	}
	testenv.Publish(u.w.t, u.w.js, completed, nats.NewInbox())
	return u
}

// deadLetter dead-letters the upload's request (the blob step gave up on
// it with reason, at), and returns the letter's sequence in UPLOADS_DLQ.
func (u *upload) deadLetter(reason string, at time.Time) uint64 {
	u.w.t.Helper()
	msg, err := u.req.Msg("")
	if err != nil {
		u.w.t.Fatal(err)
	}
	d := events.DeadLetter{Reason: reason, Step: "blob", Subject: msg.Subject, Stream: events.StreamName, Deliveries: 3, Sequence: 1, Error: "it failed", Time: at}
	dead := events.DeadLetterMsg(d, msg.Header, msg.Data, nats.NewInbox())
	ack, err := u.w.js.PublishMsg(context.Background(), dead)
	if err != nil {
		u.w.t.Fatal(err)
	}
	return ack.Sequence
}

func (w *world) get(id string) uploadview.Upload {
	w.t.Helper()
	u, err := w.view.Get(context.Background(), id)
	if err != nil {
		w.t.Fatalf("Get(%s): %v", id, err)
	}
	return u
}

// steps returns which steps of u are done, by name.
func steps(u uploadview.Upload) map[string]bool {
	out := map[string]bool{}
	for _, s := range u.Steps {
		out[s.Name] = s.Done
	}
	return out
}
