// Package pipelinetest runs the real pipeline for blobrefctl's tests: the
// ingest, blobwriter and refwriter binaries built from the workspace (and
// blobrefctl itself) as processes against a JetStream server of the test's
// own, a Postgres schema of its own and a file:// bucket, as the e2e tests
// do. Only tests import it.
package pipelinetest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
)

// Commands are what Build builds.
var Commands = []string{"services/ingest", "services/blobwriter", "services/refwriter", "tools/blobrefctl"}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds Commands once per test binary, into a temporary
// directory that Cleanup removes, and returns that directory.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "blobrefctl-test-bin-")
		if buildErr == nil {
			buildErr = testenv.Build(binDir, Commands...)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Cleanup removes what Binaries built; a TestMain calls it after m.Run.
func Cleanup() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// The bearer token of the ingest a Pipeline starts, and its caller.
const (
	IngestToken  = "pipelinetestQ7vX9pL2mN8rT4wY6bC1dF5g"
	IngestCaller = "tester"
)

// Pipeline is one test's world: JetStream, a Postgres schema, a bucket
// directory and the processes the test starts.
type Pipeline struct {
	T       *testing.T
	Bin     string
	NATS    *testenv.NATS
	NC      *nats.Conn
	JS      jetstream.JetStream
	PG      *testenv.Postgres
	BlobDir string
}

// New builds the binaries (once), starts a JetStream server and makes a
// Postgres schema for the test.
func New(t *testing.T) *Pipeline {
	t.Helper()
	p := &Pipeline{T: t, Bin: Binaries(t), BlobDir: t.TempDir()}
	p.NATS = testenv.StartNATS(t)
	p.NC, p.JS = p.NATS.Connect()
	p.PG = testenv.StartPostgres(t)
	return p
}

// Env is the environment every process gets: how to reach NATS and
// Postgres, the bucket, and quick retries.
func (p *Pipeline) Env() []string {
	return testenv.ServiceEnv(p.NATS.URL(), p.PG.URL, "file://"+p.BlobDir)
}

// Proc is a running binary.
type Proc struct {
	*testenv.Proc
	MetricsAddr string
	HTTPAddr    string // ingest's API, the console's pages
}

// Start runs a service of the pipeline (ingest, blobwriter, refwriter) with
// Env plus extra KEY=VALUE settings and waits until its /readyz answers
// 200. The test's cleanup stops it.
func (p *Pipeline) Start(name string, extra ...string) *Proc {
	p.T.Helper()
	addr := testenv.FreeAddr(p.T)
	pr := p.start(name, nil, append([]string{"METRICS_ADDR=" + addr}, extra...))
	pr.MetricsAddr = addr
	pr.AwaitReady(p.T, addr)
	return pr
}

// StartIngest runs ingest with its API on a free port and IngestToken as
// its one token.
func (p *Pipeline) StartIngest(extra ...string) *Proc {
	p.T.Helper()
	addr := testenv.FreeAddr(p.T)
	pr := p.Start("ingest", append([]string{"HTTP_ADDR=" + addr, "AUTH_TOKENS=" + IngestToken + "=" + IngestCaller}, extra...)...)
	pr.HTTPAddr = addr
	return pr
}

// StartConsole runs `blobrefctl console` on a free port with tokens (the
// CONSOLE_TOKENS format) and waits until it answers /api/me to token.
func (p *Pipeline) StartConsole(tokens, token string) *Proc {
	p.T.Helper()
	addr := testenv.FreeAddr(p.T)
	pr := p.start("blobrefctl", []string{"console", "--addr", addr}, []string{"CONSOLE_TOKENS=" + tokens})
	pr.HTTPAddr = addr
	pr.AwaitHTTP(p.T, "http://"+addr+"/api/me", http.Header{"Authorization": {"Bearer " + token}})
	return pr
}

func (p *Pipeline) start(name string, args, extra []string) *Proc {
	p.T.Helper()
	return &Proc{Proc: testenv.StartProc(p.T, name, filepath.Join(p.Bin, name), args, append(p.Env(), extra...))}
}

// Upload is what ingest answered to an upload.
type Upload struct {
	Status int
	ID     string `json:"id"`
	State  string `json:"state"`
}

// Post sends an upload to ingest: body to subject under key, waiting up to
// wait for it to complete (Prefer: wait) when wait > 0. A request that
// fails on the way (ingest died) returns the error.
func Post(ingest *Proc, subject, key, body string, wait time.Duration) (Upload, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+ingest.HTTPAddr+"/v1/uploads?subject="+url.QueryEscape(subject), strings.NewReader(body))
	if err != nil {
		return Upload{}, err
	}
	req.Header.Set("Authorization", "Bearer "+IngestToken)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "text/plain")
	if wait > 0 {
		req.Header.Set("Prefer", fmt.Sprintf("wait=%d", int(wait.Seconds())))
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait+30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return Upload{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return Upload{}, err
	}
	u := Upload{Status: resp.StatusCode}
	if resp.StatusCode >= 300 {
		return u, fmt.Errorf("POST /v1/uploads: %s: %s", resp.Status, raw)
	}
	if err := json.Unmarshal(raw, &u); err != nil {
		return u, fmt.Errorf("POST /v1/uploads: %w: %s", err, raw)
	}
	return u, nil
}
