package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// squeezed are the retry settings of the outage tests: a message's whole
// delivery budget, five deliveries 200ms to 1s apart, passes in about
// deliveryBudget, so an outage of outageLength outlasts it eight times.
var squeezed = []string{"CONSUMER_MAX_DELIVERIES=5", "CONSUMER_BACKOFF_BASE=200ms", "CONSUMER_BACKOFF_MAX=1s"}

const (
	deliveryBudget = (200 + 400 + 800 + 1000 + 1000) * time.Millisecond
	outageLength   = 8 * deliveryBudget
)

// readyz returns the service's /readyz status and body.
func (pr *proc) readyz(t *testing.T) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get("http://" + pr.metricsAddr + "/readyz")
	if err != nil {
		t.Fatalf("%s /readyz: %v", pr.Name, err)
	}
	defer resp.Body.Close()
	body := map[string]string{}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// awaitDown polls /readyz until it names dep down.
func (pr *proc) awaitDown(t *testing.T, dep string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := pr.readyz(t)
		if code == http.StatusServiceUnavailable && body[dep] == "down" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s /readyz: got %d %v, want 503 naming %s down", pr.Name, code, body, dep)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// awaitUp polls /readyz until the service is ready again.
func (pr *proc) awaitUp(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := pr.readyz(t)
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s /readyz: got %d %v, want 200", pr.Name, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// awaitMetric polls the service's metrics until family (matching match)
// reaches at least n.
func (pr *proc) awaitMetric(t *testing.T, n float64, family string, match ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for got := pr.metric(t, family, match...); got < n; got = pr.metric(t, family, match...) {
		if time.Now().After(deadline) {
			t.Fatalf("%s %s%v: got %v, want at least %v", pr.Name, family, match, got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// publishAll publishes each of us, with Nats-Msg-Id its id.
func (p *pipeline) publishAll(us []upload) {
	p.t.Helper()
	for _, u := range us {
		p.publish(u, u.ID)
	}
}

func makeUploads(prefix string, n, size int) []upload {
	us := make([]upload, n)
	for i := range us {
		us[i] = newUpload(fmt.Sprintf("%s%03d", prefix, i), size)
	}
	return us
}

// noDeadLetters fails the test if UPLOADS_DLQ holds anything.
func (p *pipeline) noDeadLetters() {
	p.t.Helper()
	if dl := testenv.DeadLetters(p.t, p.js); len(dl) != 0 {
		for subject, d := range dl {
			p.t.Errorf("dead letter %s: %+v", subject, d)
		}
	}
}

// holdUntil lets the outage that began at start go on for d in all: the
// outage's length is the test's input, not a wait for the pipeline.
func holdUntil(start time.Time, d time.Duration) {
	time.Sleep(time.Until(start.Add(d)))
}

// Postgres, stopped for eight times a message's whole delivery budget
// while uploads are published, delays them and dead-letters none: every
// upload published before and during the outage completes after it,
// once. The consumers say what is down on /readyz and in their metrics.
// Once Postgres is back, a bad event and a step that fails on its own
// still end in the dead-letter stream.
func TestPostgresOutageDelaysAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	srv := testenv.StartPGServer(t)
	p := newPipelineOn(t, srv.Postgres(), t.TempDir())
	bw := p.start("blobwriter", squeezed...)
	rw := p.start("refwriter", squeezed...)

	before := makeUploads("before", 20, 1024)
	p.publishAll(before)
	p.awaitCompleted(len(before), time.Minute)

	srv.Stop()
	start := time.Now()
	during := makeUploads("during", 40, 1024)
	p.publishAll(during)
	bw.awaitDown(t, "postgres")
	if up := bw.metric(t, "blobref_dependency_up", `dependency="postgres"`); up != 0 {
		t.Errorf("blobwriter blobref_dependency_up{dependency=postgres}: got %v while down, want 0", up)
	}
	holdUntil(start, outageLength)
	srv.Start()

	p.awaitEachCompletedOnce(during)
	bw.awaitUp(t)
	rw.awaitUp(t)
	p.noDeadLetters()
	p.checkInvariants(append(before, during...))
	if n := bw.metric(t, "blobref_dependency_outages_total", `dependency="postgres"`); n < 1 {
		t.Errorf("blobwriter outages of postgres: got %v, want at least 1", n)
	}

	// Everything is up: a bad event is dead-lettered at once, and a step
	// that keeps failing on its own (refwriter finds no blob) after its
	// five deliveries.
	testenv.PublishMsg(t, p.js, &nats.Msg{Subject: events.RequestedSubject("junk"), Data: []byte("not a cloudevent")})
	lost := newUpload("lost", 10)
	stored, err := events.NewBlobStored(lost.event(t), events.Blob{
		Key: "uploads/lost", Size: int64(len(lost.Data)), SHA256: lost.sha(), ContentType: "application/octet-stream",
	}, "/e2e")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Publish(t, p.js, stored, "lost-stored")
	dead := testenv.AwaitDeadLetters(t, p.js, 2, time.Minute)
	if d := dead[events.RequestedSubject("junk")]; d.Reason != events.ReasonMalformed {
		t.Errorf("junk: got %+v, want reason malformed", d)
	}
	if d := dead[events.BlobStoredSubject("lost")]; d.Reason != events.ReasonRetriesExhausted || d.Deliveries != 5 {
		t.Errorf("lost: got %+v, want retries_exhausted after 5 deliveries", d)
	}
}

// The bucket (MinIO) stopped for eight times the delivery budget delays
// the uploads and dead-letters none.
func TestBucketOutageDelaysAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	p := newS3Pipeline(t)
	bw := p.start("blobwriter", squeezed...)
	p.start("refwriter", squeezed...)

	before := makeUploads("before", 10, 2048)
	p.publishAll(before)
	p.awaitCompleted(len(before), time.Minute)

	p.minio.Stop()
	start := time.Now()
	during := makeUploads("during", 30, 2048)
	p.publishAll(during)
	bw.awaitDown(t, "bucket")
	holdUntil(start, outageLength)
	p.minio.Start()

	p.awaitEachCompletedOnce(during)
	bw.awaitUp(t)
	p.noDeadLetters()
	p.checkInvariants(append(before, during...))
}

// JetStream stopped for eight times the delivery budget, with uploads in
// flight, and started again: every upload completes, none is dead-lettered.
func TestJetStreamOutageDelaysAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	bw := p.start("blobwriter", squeezed...)
	rw := p.start("refwriter", squeezed...)

	before := makeUploads("before", 200, 1024)
	p.publishAll(before) // most are still on their way when JetStream stops
	p.nats.Shutdown()
	start := time.Now()
	bw.awaitDown(t, "jetstream")
	holdUntil(start, outageLength)
	p.nats.Restart()

	after := makeUploads("after", 20, 1024)
	p.publishAll(after)
	all := append(before, after...)
	// Completed events published while the test's own connection was
	// reconnecting would be missed: the markers say what completed.
	p.awaitMarkers("ref", len(all))
	bw.awaitUp(t)
	rw.awaitUp(t)
	p.noDeadLetters()
	p.checkInvariants(all)
}

// A bucket whose file system is full (ENOSPC, a real one: a small tmpfs
// filled up) is an outage: the uploads wait, through many more
// deliveries than their budget, and complete once there is room.
func TestFullBucketDelaysAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	dir := testenv.SmallFS(t, 4<<20)
	if err := os.MkdirAll(filepath.Join(dir, "uploads"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := newPipelineOn(t, testenv.StartPostgres(t), dir)
	// Temporary files beside the objects, on the small file system (by
	// default fileblob writes them to TMPDIR and renames them over).
	env := append([]string{"BLOB_URL=file://" + dir + "?no_tmp_dir=true"}, squeezed...)
	bw := p.start("blobwriter", env...)
	p.start("refwriter", env...)

	free := testenv.Fill(t, dir)
	start := time.Now()
	uploads := makeUploads("full", 20, 32<<10)
	p.publishAll(uploads)
	// Deliveries are spent and excused, three times the budget's worth.
	bw.awaitMetric(t, 15, "blobref_step_excused_deliveries_total")
	holdUntil(start, outageLength)
	free()

	p.awaitEachCompletedOnce(uploads)
	p.noDeadLetters()
	p.checkInvariants(uploads)
}

// A Postgres whose tables' file system is full (a tablespace on a small
// tmpfs, filled up: "could not extend file", SQLSTATE 53100) is an
// outage: the uploads wait and complete once there is room.
func TestFullPostgresDelaysAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	srv := testenv.StartPGServer(t)
	space := testenv.SmallFS(t, 4<<20)
	if err := srv.Chown(space); err != nil {
		t.Fatal(err)
	}
	pg := srv.Postgres()
	ctx := context.Background()
	for _, stmt := range []string{
		"CREATE TABLESPACE small LOCATION '" + space + "'",
		"ALTER TABLE step_markers SET TABLESPACE small",
		"ALTER TABLE upload_refs SET TABLESPACE small",
		"ALTER TABLE subject_refs SET TABLESPACE small",
		"CREATE TABLE filler (b text) TABLESPACE small",
	} {
		if _, err := pg.Pool.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	p := newPipelineOn(t, pg, t.TempDir())
	bw := p.start("blobwriter", squeezed...)
	p.start("refwriter", squeezed...)

	// Fill the tablespace: Postgres refuses to extend a table with
	// SQLSTATE 53100 (disk_full).
	for {
		_, err := pg.Pool.Exec(ctx, `INSERT INTO filler SELECT md5(i::text) || repeat('x', 1000) FROM generate_series(1, 256) AS i`)
		if err != nil {
			if !isDiskFull(err) {
				t.Fatalf("fill the tablespace: %v, want disk full", err)
			}
			break
		}
	}
	start := time.Now()
	uploads := makeUploads("pgfull", 20, 1024)
	p.publishAll(uploads)
	bw.awaitMetric(t, 15, "blobref_step_excused_deliveries_total")
	holdUntil(start, outageLength)
	if _, err := pg.Pool.Exec(ctx, `DROP TABLE filler`); err != nil {
		t.Fatal(err)
	}

	p.awaitEachCompletedOnce(uploads)
	p.noDeadLetters()
	p.checkInvariants(uploads)
}

// isDiskFull reports whether err is Postgres's disk_full (SQLSTATE 53100).
func isDiskFull(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "53100"
}

// A bucket that does not exist is an outage of the bucket, not a failure of
// each upload: blobwriter says so from its start, before any upload
// (/readyz, blobref_dependency_up, its log), and waits; once the bucket is
// created every upload completes, none is dead-lettered.
//
// The services' bucket is one the server never had. A bucket deleted just
// before is no such test: MinIO went on storing objects in it for a while
// after its deletion, though HeadBucket said it was gone: in 4 of 20 runs
// under load, blobwriter stored all ten uploads without one error.
func TestMissingBucketIsAnOutage(t *testing.T) {
	t.Parallel()
	m := testenv.StartMinIO(t, "blobref-e2e")
	m.Bucket = "blobref-e2e-not-yet"
	p := newS3PipelineOn(t, m)
	ctx := context.Background()
	if ok, err := p.bucket.IsAccessible(ctx); err != nil || ok {
		t.Fatalf("bucket %s before its creation: accessible %v (%v), want missing", m.Bucket, ok, err)
	}
	bw := p.launch("blobwriter", squeezed...)
	p.launch("refwriter", squeezed...)
	bw.awaitDown(t, "bucket")

	us := makeUploads("nobucket", 10, 2048)
	start := time.Now()
	p.publishAll(us)
	if up := bw.metric(t, "blobref_dependency_up", `dependency="bucket"`); up != 0 {
		t.Errorf("blobwriter blobref_dependency_up{dependency=bucket}: got %v, want 0", up)
	}
	if out := bw.Output(); !strings.Contains(out, "dependency down") || !strings.Contains(out, "dependency=bucket") {
		t.Errorf("blobwriter log: no line says the bucket is down")
	}
	holdUntil(start, outageLength)
	if _, err := p.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(p.minio.Bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", p.minio.Bucket, err)
	}

	p.awaitEachCompletedOnce(us)
	bw.awaitUp(t)
	p.noDeadLetters()
	p.checkInvariants(us)
}
