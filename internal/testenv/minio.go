package testenv

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testtools"
)

// MinIO is an S3-compatible server on a loopback port, owned by one test,
// with one bucket created.
type MinIO struct {
	Endpoint  string // http://127.0.0.1:<port>
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
	Dir       string // the server's data directory

	t             testing.TB
	bin           string
	addr, console string
	cmd           *exec.Cmd
	done          chan struct{}
	log           SyncBuffer
}

// StartMinIO starts a MinIO server with its data in a temporary directory,
// waits until it is live and creates bucket; the test's cleanup stops it.
// The binary is testtools.MinIO's (make test-tools installs it, else the
// first test that needs it does). A test that cannot find or start it
// fails: it never skips.
func StartMinIO(t testing.TB, bucket string) *MinIO {
	t.Helper()
	bin, err := testtools.MinIO()
	if err != nil {
		t.Fatal(err)
	}
	m := &MinIO{ // #nosec G101 -- credentials of a test's own MinIO on loopback
		Bucket:    bucket,
		Region:    "us-east-1",
		AccessKey: "blobref-test",
		SecretKey: "blobref-test-secret",
		Dir:       t.TempDir(),
		t:         t,
		bin:       bin,
		addr:      FreeAddr(t),
		console:   FreeAddr(t),
	}
	m.Endpoint = "http://" + m.addr
	t.Cleanup(func() {
		m.stop()
		ShowLog(t, "minio", m.log.String())
	})
	ctx := m.launch()
	defer ctx.cancel()
	// Live is not yet ready for requests: retry the bucket's creation until
	// the object layer is up.
	for {
		err := m.createBucket(ctx)
		if err == nil {
			return m
		}
		if ctx.Err() != nil {
			t.Fatalf("minio: create bucket %s: %v\n%s", bucket, err, m.log.String())
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

type launchContext struct {
	context.Context
	cancel context.CancelFunc
}

// launch starts the server process and waits until it is live.
func (m *MinIO) launch() launchContext {
	m.t.Helper()
	m.done = make(chan struct{})
	m.cmd = exec.Command(m.bin, "server", m.Dir, "--address", m.addr, "--console-address", m.console, "--quiet") // #nosec G204 -- the MinIO testtools installed
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_REGION="+m.Region,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=on", // a data directory on the root disk is fine here
		"MINIO_PROMETHEUS_AUTH_TYPE=public",
	)
	m.cmd.Stdout, m.cmd.Stderr = &m.log, &m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start minio %s: %v", m.bin, err)
	}
	cmd, done := m.cmd, m.done
	go func() { _ = cmd.Wait(); close(done) }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	if err := m.awaitLive(ctx); err != nil {
		cancel()
		m.t.Fatalf("minio on %s: %v\n%s", m.addr, err, m.log.String())
	}
	return launchContext{ctx, cancel}
}

// Stop stops the server (an outage of the bucket); Start brings it back
// on the same address with the same data.
func (m *MinIO) Stop() { m.stop() }

// Start starts the server again after Stop and waits until it serves the
// bucket.
func (m *MinIO) Start() {
	m.t.Helper()
	ctx := m.launch()
	defer ctx.cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, m.Endpoint+"/"+m.Bucket, nil)
		m.sign(req, time.Now().UTC())
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if ctx.Err() != nil {
			m.t.Fatalf("minio: bucket %s not served after a restart: %v\n%s", m.Bucket, err, m.log.String())
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// BlobURL is the gocloud.dev URL of the bucket, for BLOB_URL.
func (m *MinIO) BlobURL() string {
	q := url.Values{}
	q.Set("endpoint", m.Endpoint)
	q.Set("region", m.Region)
	q.Set("use_path_style", "true")
	q.Set("disable_https", "true")
	return "s3://" + m.Bucket + "?" + q.Encode()
}

// Env is the environment a service needs, besides BLOB_URL, to reach the
// bucket: the credentials, and no look-ups of cloud instance metadata.
func (m *MinIO) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + m.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + m.SecretKey,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
	}
}

// Requests returns how many S3 requests of kind api (e.g. "PutObject", as
// MinIO's metrics name it) the server answered, and how many of those with
// an error (4xx or 5xx), from its Prometheus metrics: the v3 API request
// metrics, read at each scrape (v2's node metrics are cached for 10s, so a
// count read soon after another missed the requests in between).
func (m *MinIO) Requests(t testing.TB, api string) (total, failed float64) {
	t.Helper()
	url, label := m.Endpoint+"/minio/metrics/v3/api/requests", fmt.Sprintf("name=%q", api)
	return ScrapeCounter(t, url, "minio_api_requests_total", label), ScrapeCounter(t, url, "minio_api_requests_errors_total", label)
}

func (m *MinIO) awaitLive(ctx context.Context) error {
	for {
		select {
		case <-m.done:
			return errors.New("exited while starting")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.Endpoint+"/minio/health/live", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("not live: %w", ctx.Err())
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// createBucket sends S3's CreateBucket, signed with AWS Signature Version 4.
// It is the one S3 request testenv makes, so it signs by hand rather than
// bring the AWS SDK into every module whose tests use testenv.
func (m *MinIO) createBucket(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, m.Endpoint+"/"+m.Bucket, nil)
	if err != nil {
		return err
	}
	m.sign(req, time.Now().UTC())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}

// sign adds SigV4 headers to req, which has an empty body.
func (m *MinIO) sign(req *http.Request, now time.Time) {
	const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	amzDate, day := now.Format("20060102T150405Z"), now.Format("20060102")
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	const signed = "host;x-amz-content-sha256;x-amz-date"
	canonical := strings.Join([]string{
		req.Method,
		req.URL.EscapedPath(),
		req.URL.RawQuery,
		"host:" + req.URL.Host + "\nx-amz-content-sha256:" + emptySHA256 + "\nx-amz-date:" + amzDate + "\n",
		signed,
		emptySHA256,
	}, "\n")
	scope := day + "/" + m.Region + "/s3/aws4_request"
	h := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(h[:])
	key := []byte("AWS4" + m.SecretKey)
	for _, part := range []string{day, m.Region, "s3", "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%x",
		m.AccessKey, scope, signed, hmacSHA256(key, toSign)))
}

func hmacSHA256(key []byte, data string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(data))
	return mac.Sum(nil)
}

// stop sends SIGTERM and waits for the server to exit, killing it after 10s.
func (m *MinIO) stop() {
	if m.cmd == nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
