package natsperms

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

// stagingBucket is ingest's STAGING_BUCKET by default, the bucket nats.conf
// grants.
const stagingBucket = "uploads-staging"

// stageChunkSize is the chunk size ingest stages bodies with.
const stageChunkSize = 128 << 10

const within = 30 * time.Second

// TestIngest runs what ingest does as user ingest once blobrefctl setup
// ran: look up the streams and the staging bucket (NATS_SETUP=off), stage a
// body, publish its request, wait for its completion and look up its dead
// letters; then what it must not do.
func TestIngest(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t))
	setUp(t, n.url(), step.Options{})
	setUp(t, n.url(), step.Options{}) // again, as every later run does
	in := connect(t, n.url(), ingest)
	bw := connect(t, n.url(), blobwriter)
	rw := connect(t, n.url(), refwriter)
	ctx := t.Context()
	lookUp(t, in)
	store := openStaging(t, in)

	// Stage a body as ingest does: look it up, put it, and on a retry find
	// it.
	id := testenv.ID("in")
	if _, err := store.GetInfo(ctx, id); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("GetInfo of an unstaged body: got %v, want ErrObjectNotFound", err)
	}
	body := randomBytes(t, 300<<10)
	info, err := store.Put(ctx, jetstream.ObjectMeta{Name: id, Opts: &jetstream.ObjectMetaOptions{ChunkSize: stageChunkSize}}, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if again, err := store.GetInfo(ctx, id); err != nil || again.Digest != info.Digest {
		t.Fatalf("GetInfo of the staged body: got %+v, %v, want digest %s", again, err, info.Digest)
	}
	// A retry resumes an unfinished body from the last chunk staged.
	objStream, err := in.js.Stream(ctx, "OBJ_"+stagingBucket)
	if err != nil {
		t.Fatalf("stream of the staging bucket: %v", err)
	}
	if last, err := objStream.GetLastMsgForSubject(ctx, "$O."+stagingBucket+".C."+info.NUID); err != nil || len(last.Data) == 0 {
		t.Fatalf("the last chunk of the staged body: got %v, want it read", err)
	}
	stale := testenv.ID("stale")
	if _, err := store.PutBytes(ctx, stale, []byte("stale")); err != nil {
		t.Fatalf("PutBytes: %v", err)
	}

	// Publish the request (claim-checked), de-duplicated by its id, and
	// wait for its completion as Prefer: wait does.
	ev, err := events.NewRequested(events.Request{
		ID: id, Source: events.SourceIngest, Subject: "users/42/avatar", ContentType: "image/png",
		DataRef: events.ObjectRef(stagingBucket, id), SHA256: sha256Hex(body),
	})
	if err != nil {
		t.Fatal(err)
	}
	done, err := in.nc.SubscribeSync(events.CompletedSubject(id))
	if err != nil {
		t.Fatal(err)
	}
	if err := in.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, in.js, ev, ev.ID)
	testenv.Publish(t, in.js, ev, ev.ID) // a re-drive
	testenv.Publish(t, rw.js, completed(t, ev), "ref/UPLOADS/2")
	if msg, err := done.NextMsg(within); err != nil || msg.Subject != events.CompletedSubject(id) {
		t.Fatalf("completed event: got %v, %v, want one on %s", msg, err, events.CompletedSubject(id))
	}
	// The completer reads a stalled upload's request back, to publish it
	// again.
	uploads, err := in.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", events.StreamName, err)
	}
	req, err := uploads.GetLastMsgForSubject(ctx, events.RequestedSubject(id))
	if err != nil {
		t.Fatalf("read back the request of %s: %v", id, err)
	}
	if back, err := events.Decode(req.Subject, req.Header, req.Data); err != nil || back.DataRef != ev.DataRef {
		t.Fatalf("read back the request of %s: got %+v, %v, want the one published", id, back, err)
	}

	// Status: ingest's read model consumes blob_stored and completed events
	// and dead letters through its own durables, which setup made.
	testenv.Publish(t, bw.js, blobStored(t, ev), "blob/UPLOADS/1")
	testenv.PublishMsg(t, bw.js, events.DeadLetterMsg(events.DeadLetter{
		Reason: events.ReasonClaimMissing, Step: events.StepBlob, Subject: events.RequestedSubject(id),
		Stream: events.StreamName, Sequence: 1, Deliveries: 1, Time: time.Now().UTC(),
	}, nil, nil, "dlq-blob/UPLOADS/1"))
	for _, spec := range events.IngestViewConsumers {
		cons, err := in.js.Consumer(ctx, spec.StreamOrDefault(), spec.Durable)
		if err != nil {
			t.Fatalf("look up the read model's consumer %s: %v", spec.Durable, err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(within))
		if err != nil {
			t.Fatalf("fetch from %s: %v", spec.Durable, err)
		}
		var got []string
		for msg := range batch.Messages() {
			got = append(got, msg.Subject())
			if err := msg.DoubleAck(ctx); err != nil {
				t.Errorf("ack on %s: %v", spec.Durable, err)
			}
		}
		if err := batch.Error(); err != nil || len(got) != 1 || !strings.HasSuffix(got[0], id) {
			t.Errorf("%s delivered %v, %v; want one event of %s", spec.Durable, got, err, id)
		}
	}
	in.checkNoViolations(t)
	n.checkNoViolations(t)

	// Nothing more: no other step's events, no dead letters, no consuming
	// the pipeline's events, no deleting, no reading staged
	// bodies back, no other's replies, no changing the streams, the bucket
	// or the consumers.
	t.Run("denied", func(t *testing.T) {
		in.deniedPub(t, events.BlobStoredSubject(id))
		in.deniedPub(t, events.CompletedSubject(id))
		in.deniedPub(t, events.DeadLetterSubject(events.RequestedSubject(id)))
		in.deniedSub(t, "uploads.>")
		in.deniedSub(t, "uploads.requested.*")
		in.deniedSub(t, "dlq.uploads.>")
		// Its status comes from its read model, not from the dead-letter stream.
		in.deniedRequest(t, "$JS.API.STREAM.MSG.GET.UPLOADS_DLQ", `{"last_by_subj":"dlq.uploads.requested.`+id+`"}`)
		in.denied(t, "refilter its read model's consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.ingest-stored", func(ctx context.Context) error {
			cc := service.ViewConsumerConfig(events.IngestStoredConsumer)
			cc.FilterSubject = events.RequestedSubject(">")
			_, err := in.js.CreateOrUpdateConsumer(ctx, events.StreamName, cc)
			return err
		})
		in.denied(t, "delete its read model's consumer", "Publish", "$JS.API.CONSUMER.DELETE.UPLOADS_DLQ.ingest-deadletters", func(ctx context.Context) error {
			return in.js.DeleteConsumer(ctx, events.DLQStreamName, events.IngestDeadLetterConsumer.Durable)
		})
		in.denied(t, "consumer info blobwriter", "Publish", "$JS.API.CONSUMER.INFO.UPLOADS.blobwriter", func(ctx context.Context) error {
			_, err := in.js.Consumer(ctx, events.StreamName, events.BlobWriterConsumer.Durable)
			return err
		})
		in.deniedRequest(t, "$JS.API.CONSUMER.MSG.NEXT.UPLOADS.blobwriter", `{"batch":1,"expires":1000000000}`)
		in.deniedPub(t, "$JS.ACK.UPLOADS.blobwriter.1.1.1.1.0")
		in.denied(t, "create the blobwriter consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.blobwriter", func(ctx context.Context) error {
			_, err := in.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.BlobWriterConsumer))
			return err
		})
		in.denied(t, "read UPLOADS", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.", func(ctx context.Context) error {
			_, err := in.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
			return err
		})
		in.deniedRequest(t, "$JS.API.STREAM.PURGE.UPLOADS_DLQ", "")
		in.denied(t, "delete UPLOADS", "Publish", "$JS.API.STREAM.DELETE.UPLOADS", func(ctx context.Context) error {
			return in.js.DeleteStream(ctx, events.StreamName)
		})
		in.denied(t, "delete UPLOADS_DLQ", "Publish", "$JS.API.STREAM.DELETE.UPLOADS_DLQ", func(ctx context.Context) error {
			return in.js.DeleteStream(ctx, events.DLQStreamName)
		})
		in.denied(t, "read a staged body", "Publish", "$JS.API.CONSUMER.CREATE.OBJ_uploads-staging", func(ctx context.Context) error {
			_, err := store.GetBytes(ctx, id)
			return err
		})
		in.denied(t, "another bucket", "Publish", "$JS.API.STREAM.CREATE.OBJ_other", func(ctx context.Context) error {
			_, err := in.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "other"})
			return err
		})
		deniedCommon(t, in)
		// The staging bucket: purge it whole, or an object's chunks (an
		// object store delete marks the object deleted, then purges its
		// chunks: the mark is ingest's to write, the purge is refused, and
		// the chunks expire with the bucket's TTL), or change it.
		in.deniedRequest(t, "$JS.API.STREAM.PURGE.OBJ_uploads-staging", "")
		in.denied(t, "purge the staging bucket", "Publish", "$JS.API.STREAM.PURGE.OBJ_uploads-staging", func(ctx context.Context) error {
			s, err := in.js.Stream(ctx, "OBJ_"+stagingBucket)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		})
		in.denied(t, "delete a staged object's chunks", "Publish", "$JS.API.STREAM.PURGE.OBJ_uploads-staging", func(ctx context.Context) error {
			return store.Delete(ctx, stale)
		})
		if _, err := store.GetInfo(t.Context(), stale); !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Errorf("a staged object after the refused delete: got %v, want it marked deleted (ErrObjectNotFound)", err)
		}
		in.denied(t, "update the staging bucket", "Publish", "$JS.API.STREAM.UPDATE.OBJ_uploads-staging", func(ctx context.Context) error {
			_, err := in.js.CreateOrUpdateObjectStore(ctx, claimcheck.BucketConfig(stagingBucket, time.Second, 1, 0))
			return err
		})
		in.denied(t, "delete the staging bucket", "Publish", "$JS.API.STREAM.DELETE.OBJ_uploads-staging", func(ctx context.Context) error {
			return in.js.DeleteObjectStore(ctx, stagingBucket)
		})
	})
	checkUnchanged(t, n)
}

// TestSetup shows that the setup user, which creates and updates the
// streams, the staging bucket and the durable consumers, can do nothing
// else: read or publish events, delete or purge, delete a consumer or make
// one that reads other subjects.
func TestSetup(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t))
	s := setUp(t, n.url(), step.Options{})
	setUp(t, n.url(), step.Options{AckWait: time.Minute}) // an update
	adm := connect(t, n.url(), admin)
	if c, err := adm.js.Consumer(t.Context(), events.StreamName, events.BlobWriterConsumer.Durable); err != nil || c.CachedInfo().Config.AckWait != time.Minute {
		t.Fatalf("consumer after setup with another ack wait: %v, want it updated to 1m", err)
	}
	for _, spec := range events.IngestViewConsumers {
		c, err := adm.js.Consumer(t.Context(), spec.StreamOrDefault(), spec.Durable)
		if err != nil || c.CachedInfo().Config.FilterSubject != spec.FilterSubject {
			t.Fatalf("read model consumer %s after setup: %v, want filter %s", spec.Durable, err, spec.FilterSubject)
		}
	}
	t.Run("denied", func(t *testing.T) {
		s.deniedPub(t, events.RequestedSubject(testenv.ID("forged")))
		s.deniedSub(t, "uploads.>")
		s.deniedSub(t, "_INBOX.>")
		s.deniedSub(t, stepservice.DefaultInboxPrefix(blobwriter)+".>")
		s.denied(t, "read UPLOADS", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.", func(ctx context.Context) error {
			_, err := s.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
			return err
		})
		s.denied(t, "refilter blobwriter's consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.blobwriter.uploads.completed", func(ctx context.Context) error {
			_, err := s.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.ConsumerSpec{
				Durable: events.BlobWriterConsumer.Durable, FilterSubject: "uploads.completed.>",
			}))
			return err
		})
		s.denied(t, "widen ingest's dead-letter consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS_DLQ.ingest-deadletters.dlq", func(ctx context.Context) error {
			cc := service.ViewConsumerConfig(events.IngestDeadLetterConsumer)
			cc.FilterSubject = "dlq.>"
			_, err := s.js.CreateOrUpdateConsumer(ctx, events.DLQStreamName, cc)
			return err
		})
		s.denied(t, "delete a consumer", "Publish", "$JS.API.CONSUMER.DELETE.UPLOADS.blobwriter", func(ctx context.Context) error {
			return s.js.DeleteConsumer(ctx, events.StreamName, events.BlobWriterConsumer.Durable)
		})
		s.deniedRequest(t, "$JS.API.STREAM.PURGE.UPLOADS", "")
		s.deniedRequest(t, "$JS.API.STREAM.MSG.GET.UPLOADS_DLQ", `{"seq":1}`)
		s.denied(t, "delete UPLOADS", "Publish", "$JS.API.STREAM.DELETE.UPLOADS", func(ctx context.Context) error {
			return s.js.DeleteStream(ctx, events.StreamName)
		})
		s.denied(t, "delete the staging bucket", "Publish", "$JS.API.STREAM.DELETE.OBJ_uploads-staging", func(ctx context.Context) error {
			return s.js.DeleteObjectStore(ctx, stagingBucket)
		})
	})
}

// TestBlobWriter runs the step runtime as user blobwriter on its durable
// consumer, with a step that reads its bytes as blobwriter does (inline, or
// from the staging bucket through an ordered consumer), publishes
// blob_stored events, retries (Nak with delay), heartbeats (InProgress) and
// dead-letters; then what it must not do.
func TestBlobWriter(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t))
	setUp(t, n.url(), runnerOptions)
	bw := connect(t, n.url(), blobwriter)
	in := connect(t, n.url(), ingest)
	adm := connect(t, n.url(), admin)
	lookUp(t, bw)
	store := openStaging(t, in)
	ctx := t.Context()

	// Requests as ingest publishes them: inline (the first delivery fails,
	// the second is slow), claim-checked, and claim-checked with a sha256
	// the bytes do not have.
	inline := request(t, testenv.ID("inline"), randomBytes(t, 4<<10), "")
	body := randomBytes(t, 300<<10)
	claimID := testenv.ID("claim")
	if _, err := store.Put(ctx, jetstream.ObjectMeta{Name: claimID, Opts: &jetstream.ObjectMetaOptions{ChunkSize: stageChunkSize}}, bytes.NewReader(body)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	claimed := request(t, claimID, nil, sha256Hex(body))
	wrong := request(t, testenv.ID("wrong"), nil, sha256Hex([]byte("other bytes")))
	wrong.DataRef = events.ObjectRef(stagingBucket, claimID)
	// Never staged: the claim reader asks the bucket's leader before it
	// calls a claim check missing (claimcheck's getInfo).
	missing := request(t, testenv.ID("missing"), nil, sha256Hex([]byte("never staged")))

	stored := testenv.Subscribe(t, adm.nc, "uploads.blob.stored.>")
	var mu sync.Mutex
	attempts := map[string]int{}
	runStep(t, bw, step.Step[events.Blob]{
		Name:     events.StepBlob,
		Consumes: events.BlobWriterConsumer.Consumes,
		Durable:  events.BlobWriterConsumer.Durable,
		Effect: func(ctx context.Context, ev *events.Event) (events.Blob, error) {
			mu.Lock()
			attempts[ev.ID]++
			attempt := attempts[ev.ID]
			mu.Unlock()
			if ev.ID == inline.ID {
				switch attempt {
				case 1:
					return events.Blob{}, errors.New("a transient failure") // Nak with delay
				case 2:
					// Longer than a third of AckWait: the runner sends
					// InProgress meanwhile.
					if err := wait(ctx, 1200*time.Millisecond); err != nil {
						return events.Blob{}, err
					}
				}
			}
			data := ev.Data
			if ev.DataRef != "" {
				var err error
				if data, err = readClaim(ctx, bw.js, ev.DataRef); err != nil {
					return events.Blob{}, err
				}
			}
			if sum := sha256Hex(data); sum != ev.SHA256 {
				return events.Blob{}, step.Permanent(events.ReasonDigestMismatch, fmt.Errorf("bytes have sha256 %s", sum))
			}
			return events.Blob{Key: "uploads/" + ev.ID, Size: int64(len(data)), SHA256: ev.SHA256, ContentType: ev.ContentType}, nil
		},
		Emit: func(ev *events.Event, b events.Blob) (*events.Event, error) {
			return events.NewBlobStored(ev, b, events.SourceBlobWriter)
		},
	})
	for _, ev := range []*events.Event{inline, claimed, wrong, missing} {
		testenv.Publish(t, in.js, ev, ev.ID)
	}
	got := stored.Await(t, 2, within)
	for _, ev := range []*events.Event{inline, claimed} {
		if len(got[ev.ID]) != 1 {
			t.Errorf("blob_stored events of %s: got %d, want 1", ev.ID, len(got[ev.ID]))
		}
	}
	if d, _ := testenv.AwaitDeadLetter(t, adm.js, events.RequestedSubject(wrong.ID), within); d.Reason != events.ReasonDigestMismatch {
		t.Errorf("dead letter of %s: got reason %q, want %q", wrong.ID, d.Reason, events.ReasonDigestMismatch)
	}
	if d, _ := testenv.AwaitDeadLetter(t, adm.js, events.RequestedSubject(missing.ID), within); d.Reason != events.ReasonClaimMissing {
		t.Errorf("dead letter of %s: got reason %q, want %q", missing.ID, d.Reason, events.ReasonClaimMissing)
	}
	mu.Lock()
	if attempts[inline.ID] < 2 {
		t.Errorf("%s ran %d times, want a retry", inline.ID, attempts[inline.ID])
	}
	mu.Unlock()
	deleteClaim(t, bw, store, claimID)
	bw.checkNoViolations(t)
	in.checkNoViolations(t)
	n.checkNoViolations(t)

	t.Run("denied", func(t *testing.T) {
		bw.deniedPub(t, events.CompletedSubject(inline.ID))
		bw.deniedPub(t, events.RequestedSubject(testenv.ID("forged")))
		bw.deniedPub(t, events.DeadLetterSubject(events.BlobStoredSubject(inline.ID)))
		bw.deniedSub(t, "uploads.>")
		bw.deniedSub(t, "dlq.uploads.>")
		// The dead-letter stream's messages, every way there is.
		bw.denied(t, "look up UPLOADS_DLQ", "Publish", "$JS.API.STREAM.INFO.UPLOADS_DLQ", func(ctx context.Context) error {
			_, err := bw.js.Stream(ctx, events.DLQStreamName)
			return err
		})
		bw.deniedRequest(t, "$JS.API.STREAM.MSG.GET.UPLOADS_DLQ", `{"last_by_subj":"dlq.uploads.requested.`+wrong.ID+`"}`)
		bw.deniedRequest(t, "$JS.API.DIRECT.GET.UPLOADS_DLQ.dlq.uploads.requested."+wrong.ID, "")
		bw.denied(t, "consume UPLOADS_DLQ", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS_DLQ.", func(ctx context.Context) error {
			_, err := bw.js.OrderedConsumer(ctx, events.DLQStreamName, jetstream.OrderedConsumerConfig{})
			return err
		})
		// Other consumers, or its own on other subjects.
		bw.deniedRequest(t, "$JS.API.CONSUMER.MSG.NEXT.UPLOADS.ingest-stored", `{"batch":1,"expires":1000000000}`)
		bw.deniedRequest(t, "$JS.API.CONSUMER.MSG.NEXT.UPLOADS_DLQ.ingest-deadletters", `{"batch":1,"expires":1000000000}`)
		bw.denied(t, "create the refwriter consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.refwriter", func(ctx context.Context) error {
			_, err := bw.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.RefWriterConsumer))
			return err
		})
		bw.deniedRequest(t, "$JS.API.CONSUMER.MSG.NEXT.UPLOADS.refwriter", `{"batch":1,"expires":1000000000}`)
		bw.denied(t, "refilter its consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.blobwriter.uploads.completed", func(ctx context.Context) error {
			_, err := bw.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.ConsumerSpec{
				Durable: events.BlobWriterConsumer.Durable, FilterSubject: "uploads.completed.>",
			}))
			return err
		})
		bw.denied(t, "read UPLOADS", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.", func(ctx context.Context) error {
			_, err := bw.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
			return err
		})
		// Deleting.
		bw.denied(t, "delete UPLOADS", "Publish", "$JS.API.STREAM.DELETE.UPLOADS", func(ctx context.Context) error {
			return bw.js.DeleteStream(ctx, events.StreamName)
		})
		bw.denied(t, "delete UPLOADS_DLQ", "Publish", "$JS.API.STREAM.DELETE.UPLOADS_DLQ", func(ctx context.Context) error {
			return bw.js.DeleteStream(ctx, events.DLQStreamName)
		})
		bw.denied(t, "delete its consumer", "Publish", "$JS.API.CONSUMER.DELETE.UPLOADS.blobwriter", func(ctx context.Context) error {
			return bw.js.DeleteConsumer(ctx, events.StreamName, events.BlobWriterConsumer.Durable)
		})
		bw.deniedRequest(t, "$JS.API.STREAM.PURGE.UPLOADS", "")
		bw.deniedRequest(t, "$JS.API.STREAM.MSG.DELETE.UPLOADS", `{"seq":1}`)
		// The staging bucket: it deletes claim checks by rolled-up
		// publishes (above), never by a purge.
		bw.deniedRequest(t, "$JS.API.STREAM.PURGE.OBJ_uploads-staging", "")
		bw.denied(t, "create its consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.blobwriter.uploads.requested", func(ctx context.Context) error {
			_, err := bw.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.BlobWriterConsumer))
			return err
		})
		deniedCommon(t, bw)
	})
	checkUnchanged(t, n)
}

// TestRefWriter runs the step runtime as user refwriter on its durable
// consumer, publishing completed events and dead letters; then what it must
// not do.
func TestRefWriter(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t))
	setUp(t, n.url(), runnerOptions)
	rw := connect(t, n.url(), refwriter)
	bw := connect(t, n.url(), blobwriter)
	in := connect(t, n.url(), ingest)
	adm := connect(t, n.url(), admin)
	lookUp(t, rw)

	ok := blobStored(t, request(t, testenv.ID("ok"), randomBytes(t, 1<<10), ""))
	conflict := blobStored(t, request(t, testenv.ID("conflict"), randomBytes(t, 1<<10), ""))
	done, err := in.nc.SubscribeSync(events.CompletedSubject(ok.ID)) // as ingest waits
	if err != nil {
		t.Fatal(err)
	}
	if err := in.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	runStep(t, rw, step.Step[events.Reference]{
		Name:     events.StepRef,
		Consumes: events.RefWriterConsumer.Consumes,
		Durable:  events.RefWriterConsumer.Durable,
		Effect: func(ctx context.Context, ev *events.Event) (events.Reference, error) {
			if ev.ID == conflict.ID {
				return events.Reference{}, step.Conflict("upload %s is known with another sha256", ev.ID)
			}
			return events.Reference{ID: ev.ID, Subject: ev.Subject, Blob: *ev.Blob, EventTime: ev.Time}, nil
		},
		Emit: func(ev *events.Event, ref events.Reference) (*events.Event, error) {
			return events.NewCompleted(ev, ref, events.SourceRefWriter)
		},
	})
	testenv.Publish(t, bw.js, ok, "blob/UPLOADS/1")
	testenv.Publish(t, bw.js, conflict, "blob/UPLOADS/2")
	if msg, err := done.NextMsg(within); err != nil {
		t.Fatalf("completed event of %s: %v", ok.ID, err)
	} else if ev, err := events.Decode(msg.Subject, msg.Header, msg.Data); err != nil || ev.Ref == nil || ev.Ref.ID != ok.ID {
		t.Fatalf("completed event of %s: got %+v, %v", ok.ID, ev, err)
	}
	if d, _ := testenv.AwaitDeadLetter(t, adm.js, events.BlobStoredSubject(conflict.ID), within); d.Reason != events.ReasonConflict || d.Step != events.StepRef {
		t.Errorf("dead letter of %s: got reason %q step %q, want %q by ref", conflict.ID, d.Reason, d.Step, events.ReasonConflict)
	}
	rw.checkNoViolations(t)
	bw.checkNoViolations(t)
	n.checkNoViolations(t)

	t.Run("denied", func(t *testing.T) {
		rw.deniedPub(t, events.BlobStoredSubject(ok.ID))
		rw.deniedPub(t, events.RequestedSubject(ok.ID))
		rw.deniedPub(t, events.DeadLetterSubject(events.RequestedSubject(ok.ID)))
		rw.deniedSub(t, "uploads.completed.>")
		rw.deniedRequest(t, "$JS.API.CONSUMER.MSG.NEXT.UPLOADS.blobwriter", `{"batch":1,"expires":1000000000}`)
		rw.denied(t, "create the blobwriter consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.blobwriter", func(ctx context.Context) error {
			_, err := rw.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.BlobWriterConsumer))
			return err
		})
		rw.denied(t, "open the staging bucket", "Publish", "$JS.API.STREAM.INFO.OBJ_uploads-staging", func(ctx context.Context) error {
			_, err := rw.js.ObjectStore(ctx, stagingBucket)
			return err
		})
		rw.deniedRequest(t, "$JS.API.STREAM.MSG.GET.UPLOADS_DLQ", `{"last_by_subj":"dlq.uploads.blob.stored.`+conflict.ID+`"}`)
		rw.denied(t, "delete UPLOADS", "Publish", "$JS.API.STREAM.DELETE.UPLOADS", func(ctx context.Context) error {
			return rw.js.DeleteStream(ctx, events.StreamName)
		})
		rw.denied(t, "create its consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.refwriter.uploads.blob.stored", func(ctx context.Context) error {
			_, err := rw.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.RefWriterConsumer))
			return err
		})
		deniedCommon(t, rw)
	})
	checkUnchanged(t, n)
}

// TestNotifier runs what notifier does as user notifier once blobrefctl
// setup ran: look up UPLOADS, run a step that ends the chain on its
// looked-up durable consumer (acking what it delivered, dead-lettering
// what it could not); then what it must not do: publish any event, read
// another step's consumer or the dead letters, create or refilter its
// consumer.
func TestNotifier(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t))
	setUp(t, n.url(), runnerOptions)
	nt := connect(t, n.url(), notifier)
	rw := connect(t, n.url(), refwriter)
	adm := connect(t, n.url(), admin)
	lookUp(t, nt)

	ok := completed(t, request(t, testenv.ID("ok"), randomBytes(t, 1<<10), ""))
	gone := completed(t, request(t, testenv.ID("gone"), randomBytes(t, 1<<10), ""))
	delivered := make(chan string, 2)
	runStep(t, nt, step.Step[string]{
		Name:     events.StepNotify,
		Consumes: events.NotifierConsumer.Consumes,
		Durable:  events.NotifierConsumer.Durable,
		Effect: func(_ context.Context, ev *events.Event) (string, error) {
			if ev.ID == gone.ID {
				return "", step.Permanent("delivery_failed", errors.New("the endpoint is not a public address"))
			}
			delivered <- ev.ID
			return "delivered", nil
		},
	})
	testenv.Publish(t, rw.js, ok, "ref/UPLOADS/1")
	testenv.Publish(t, rw.js, gone, "ref/UPLOADS/2")
	select {
	case id := <-delivered:
		if id != ok.ID {
			t.Fatalf("delivered %s, want %s", id, ok.ID)
		}
	case <-time.After(within):
		t.Fatalf("%s not delivered after %v", ok.ID, within)
	}
	if d, _ := testenv.AwaitDeadLetter(t, adm.js, events.CompletedSubject(gone.ID), within); d.Reason != "delivery_failed" || d.Step != events.StepNotify {
		t.Errorf("dead letter of %s: got reason %q step %q, want delivery_failed by %s", gone.ID, d.Reason, d.Step, events.StepNotify)
	}
	nt.checkNoViolations(t)
	n.checkNoViolations(t)

	t.Run("denied", func(t *testing.T) {
		nt.deniedPub(t, events.CompletedSubject(ok.ID))
		nt.deniedPub(t, events.RequestedSubject(ok.ID))
		nt.deniedPub(t, events.BlobStoredSubject(ok.ID))
		nt.deniedPub(t, events.DeadLetterSubject(events.BlobStoredSubject(ok.ID)))
		nt.deniedSub(t, "uploads.completed.>")
		nt.deniedSub(t, "dlq.uploads.>")
		nt.deniedRequest(t, "$JS.API.CONSUMER.MSG.NEXT.UPLOADS.refwriter", `{"batch":1,"expires":1000000000}`)
		nt.deniedRequest(t, "$JS.API.STREAM.MSG.GET.UPLOADS_DLQ", `{"last_by_subj":"dlq.uploads.completed.`+gone.ID+`"}`)
		nt.deniedRequest(t, "$JS.API.STREAM.MSG.GET.UPLOADS", `{"last_by_subj":"uploads.completed.`+ok.ID+`"}`)
		nt.denied(t, "open the staging bucket", "Publish", "$JS.API.STREAM.INFO.OBJ_uploads-staging", func(ctx context.Context) error {
			_, err := nt.js.ObjectStore(ctx, stagingBucket)
			return err
		})
		nt.denied(t, "create its consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.notifier.uploads.completed", func(ctx context.Context) error {
			_, err := nt.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.NotifierConsumer))
			return err
		})
		nt.denied(t, "refilter its consumer", "Publish", "$JS.API.CONSUMER.CREATE.UPLOADS.notifier.uploads.requested", func(ctx context.Context) error {
			_, err := nt.js.CreateOrUpdateConsumer(ctx, events.StreamName, consumerConfig(events.ConsumerSpec{
				Durable: events.NotifierConsumer.Durable, FilterSubject: "uploads.requested.>",
			}))
			return err
		})
		nt.denied(t, "delete its consumer", "Publish", "$JS.API.CONSUMER.DELETE.UPLOADS.notifier", func(ctx context.Context) error {
			return nt.js.DeleteConsumer(ctx, events.StreamName, events.NotifierConsumer.Durable)
		})
		deniedCommon(t, nt)
	})
	checkUnchanged(t, n)
}

// TestAdmin shows that the admin user (whose password the server holds as
// a bcrypt hash) can do what operators do with the NATS CLI, and the sys
// user can reach the system account.
func TestAdmin(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t))
	adm := connect(t, n.url(), admin)
	adm.ensureStreams(t)
	ctx := t.Context()
	ev := request(t, testenv.ID("adm"), []byte("hello"), "")
	testenv.Publish(t, adm.js, ev, ev.ID) // nats pub uploads.requested.<id>
	testenv.PublishMsg(t, adm.js, events.DeadLetterMsg(events.DeadLetter{
		Reason: events.ReasonMalformed, Step: events.StepBlob, Subject: events.RequestedSubject(ev.ID), Time: time.Now().UTC(),
	}, nil, nil, ""))
	// nats stream view UPLOADS_DLQ: an ordered consumer.
	cons, err := adm.js.OrderedConsumer(ctx, events.DLQStreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer on %s: %v", events.DLQStreamName, err)
	}
	if msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil {
		t.Fatalf("dead letter: %v", err)
	} else if d, err := events.ParseDeadLetter(msg.Headers()); err != nil || d.Reason != events.ReasonMalformed {
		t.Fatalf("dead letter: got %+v, %v", d, err)
	}
	// nats consumer info, nats stream purge, nats stream rm.
	createConsumer(t, adm, events.BlobWriterConsumer)
	if _, err := adm.js.Consumer(ctx, events.StreamName, events.BlobWriterConsumer.Durable); err != nil {
		t.Errorf("consumer info: %v", err)
	}
	s, err := adm.js.Stream(ctx, events.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Errorf("purge %s: %v", events.DLQStreamName, err)
	}
	if err := adm.js.DeleteStream(ctx, events.DLQStreamName); err != nil {
		t.Errorf("delete %s: %v", events.DLQStreamName, err)
	}
	adm.checkNoViolations(t)

	// nats server ping, as sys.
	sy := connect(t, n.url(), sys)
	if _, err := sy.nc.Request("$SYS.REQ.SERVER.PING.VARZ", nil, 10*time.Second); err != nil {
		t.Errorf("sys: server ping: %v", err)
	}
	n.checkNoViolations(t)
}

// TestAuthentication shows that a connection needs a user and its own
// password.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t))
	for name, opt := range map[string]nats.Option{
		"no credentials":           func(*nats.Options) error { return nil },
		"wrong password":           nats.UserInfo(blobwriter, "wrong"),
		"another user's password":  nats.UserInfo(blobwriter, passwords[refwriter]),
		"admin's bcrypt hash":      nats.UserInfo(admin, mustGetenv(t, passwordEnv(admin))),
		"a user that is not there": nats.UserInfo("nobody", passwords[ingest]),
	} {
		nc, err := nats.Connect(n.url(), opt, nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected, want an authorization error", name)
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: got %v, want an authorization error", name, err)
		}
	}
}

// TestServerLogsViolations shows that what checkNoViolations reads from
// the server's log is there when the server refuses something.
func TestServerLogsViolations(t *testing.T) {
	t.Parallel()
	n := startServer(t, confPath(t))
	bw := connect(t, n.url(), blobwriter)
	if v := n.violations(); len(v) != 0 {
		t.Fatalf("violations before anything was refused: %q", v)
	}
	bw.deniedPub(t, "uploads.requested.logged")
	want := `Publish Violation - Subject "uploads.requested.logged"`
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := n.violations()
		if len(v) == 1 && strings.Contains(v[0], want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server log's violations: got %q, want one with %s", v, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openStaging looks the staging bucket up as ingest does with
// NATS_SETUP=off.
func openStaging(t testing.TB, c *client) jetstream.ObjectStore {
	t.Helper()
	store, err := c.js.ObjectStore(t.Context(), stagingBucket)
	if err != nil {
		t.Fatalf("%s: staging bucket: %v", c.user, err)
	}
	return store
}

// lookUp does what a service does at start-up with NATS_SETUP=off: it
// waits for UPLOADS (stepservice.SetUpStreams), which setup has created.
func lookUp(t testing.TB, c *client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	if err := stepservice.SetUpStreams(ctx, c.js, stepservice.SetupOff, events.StreamOptions{}, testenv.Logger(t)); err != nil {
		t.Fatalf("%s: look up the streams: %v", c.user, err)
	}
}

// consumerConfig is the durable consumer config blobrefctl setup creates
// for spec (step.DurableConfig with the default options).
func consumerConfig(spec events.ConsumerSpec) jetstream.ConsumerConfig {
	return step.DurableConfig(spec, step.Options{})
}

// createConsumer creates the durable consumer spec as c (the admin).
func createConsumer(t testing.TB, c *client, spec events.ConsumerSpec) jetstream.Consumer {
	t.Helper()
	cons, err := c.js.CreateOrUpdateConsumer(t.Context(), events.StreamName, consumerConfig(spec))
	if err != nil {
		t.Fatalf("%s: consumer %s: %v", c.user, spec.Durable, err)
	}
	return cons
}

// deniedCommon expects what no service may do to be refused to c: read
// another's replies or deliveries (subscribe to another's inbox prefix, or
// to every inbox), change a stream (an update to max_age=1s would empty it)
// or create one.
func deniedCommon(t *testing.T, c *client) {
	t.Helper()
	c.deniedSub(t, "_INBOX.>")
	for _, other := range []string{ingest, blobwriter, refwriter, notifier, setup} {
		if other != c.user {
			c.deniedSub(t, stepservice.DefaultInboxPrefix(other)+".>")
		}
	}
	for _, cfg := range []jetstream.StreamConfig{events.StreamConfig(events.StreamOptions{}), events.DLQStreamConfig(events.StreamOptions{})} {
		cfg.MaxAge = time.Second
		c.denied(t, "update "+cfg.Name+" to max_age=1s", "Publish", "$JS.API.STREAM.UPDATE."+cfg.Name, func(ctx context.Context) error {
			_, err := c.js.UpdateStream(ctx, cfg)
			return err
		})
	}
	c.denied(t, "create a stream", "Publish", "$JS.API.STREAM.CREATE.OTHER", func(ctx context.Context) error {
		_, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}})
		return err
	})
}

// checkUnchanged checks, as the admin, that the streams and the staging
// bucket still have setup's settings.
func checkUnchanged(t *testing.T, n *natsServer) {
	t.Helper()
	adm := connect(t, n.url(), admin)
	want := setupConfig(t, step.Options{})
	for name, maxAge := range map[string]time.Duration{
		events.StreamName: want.StreamMaxAge, events.DLQStreamName: want.DLQMaxAge, "OBJ_" + stagingBucket: want.StagingTTL,
	} {
		s, err := adm.js.Stream(t.Context(), name)
		if err != nil {
			t.Errorf("stream %s: %v", name, err)
		} else if got := s.CachedInfo().Config.MaxAge; got != maxAge {
			t.Errorf("stream %s: max age %s, want setup's %s", name, got, maxAge)
		}
	}
}

// runnerOptions are the step runners' options in these tests.
var runnerOptions = step.Options{
	Concurrency:    4,
	AckWait:        1500 * time.Millisecond, // heartbeats every 500ms
	BackoffBase:    50 * time.Millisecond,
	BackoffMax:     200 * time.Millisecond,
	FetchWait:      500 * time.Millisecond,
	ShutdownGrace:  2 * time.Second,
	LookUpConsumer: true, // NATS_SETUP=off: setUp(runnerOptions) created it
}

// runStep runs step under the step runtime as c, with its markers in a
// Postgres schema of the test's own, until the test ends.
func runStep[R any](t *testing.T, c *client, s step.Step[R]) {
	t.Helper()
	pg := testenv.StartPostgres(t)
	o := runnerOptions
	o.Logger = testenv.Logger(t)
	r, err := step.NewRunner(c.js, pg.Pool, s, o)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
}

// readClaim reads the claim-checked bytes dataref names with blobwriter's
// claim reader (claimcheck.ObjectClaims.Open): the object's info, its
// chunks through an ordered pull consumer, the consumer's deletion, and
// for an object a replica does not find, the bucket leader's word.
func readClaim(ctx context.Context, js jetstream.JetStream, dataref string) ([]byte, error) {
	r, err := claimcheck.ObjectClaims{JS: js}.Open(ctx, dataref)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return data, err
}

// request builds a requested event: inline when data is set, else
// claim-checked in the staging bucket under its id with the given sha256.
func request(t testing.TB, id string, data []byte, sha string) *events.Event {
	t.Helper()
	r := events.Request{ID: id, Source: events.SourceIngest, Subject: "users/42/avatar", ContentType: "application/octet-stream", Data: data}
	if data == nil {
		r.DataRef, r.SHA256 = events.ObjectRef(stagingBucket, id), sha
	}
	ev, err := events.NewRequested(r)
	if err != nil {
		t.Fatalf("request %s: %v", id, err)
	}
	return ev
}

// blobStored is the blob_stored event blobwriter emits for req.
func blobStored(t testing.TB, req *events.Event) *events.Event {
	t.Helper()
	ev, err := events.NewBlobStored(req, events.Blob{
		Key: "uploads/" + req.ID, Size: int64(len(req.Data)), SHA256: req.SHA256, ContentType: req.ContentType,
	}, events.SourceBlobWriter)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// completed is the completed event refwriter emits for req.
func completed(t testing.TB, req *events.Event) *events.Event {
	t.Helper()
	stored := blobStored(t, req)
	ev, err := events.NewCompleted(stored, events.Reference{ID: req.ID, Subject: req.Subject, Blob: *stored.Blob, EventTime: req.Time}, events.SourceRefWriter)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// wait waits for d unless ctx is done first.
func wait(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func mustGetenv(t testing.TB, name string) string {
	t.Helper()
	v, ok := os.LookupEnv(name)
	if !ok {
		t.Fatalf("%s is not set", name)
	}
	return v
}

// deleteClaim deletes staged object name as blobwriter does once its blob
// is stored (claimcheck.ObjectClaims.Delete), as user c: it marks the
// object deleted and rolls its chunks up into one empty message, with
// publishes only.
func deleteClaim(t *testing.T, c *client, store jetstream.ObjectStore, name string) {
	t.Helper()
	ctx := t.Context()
	if err := (claimcheck.ObjectClaims{JS: c.js}).Delete(ctx, events.ObjectRef(stagingBucket, name)); err != nil {
		t.Fatalf("delete %s: %v", name, err)
	}
	if _, err := store.GetInfo(ctx, name); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("GetInfo %s after its deletion: got %v, want ErrObjectNotFound", name, err)
	}
}
