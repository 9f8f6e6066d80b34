package ingestbench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/blobref/blobref/bench/internal/pipeline"
)

// uploadsPath is ingest's collection of uploads.
const uploadsPath = "/v1/uploads"

// client uploads to ingest as a caller would: one POST per upload with its
// own Idempotency-Key, over keep-alive connections.
type client struct {
	base string
	http *http.Client
}

// newClient returns a client for conns concurrent requests.
func newClient(base string, conns int) *client {
	return &client{base: base, http: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: conns, // the default, 2, would reconnect for nearly every request
		DisableCompression:  true,
	}}}
}

func (c *client) close() { c.http.CloseIdleConnections() }

// post uploads the size bytes body reads under key (Prefer not set) and
// returns the upload id once ingest answers 202 Accepted: JetStream has the
// request event.
func (c *client) post(ctx context.Context, key string, body io.Reader, size int64) (string, error) {
	u := c.base + uploadsPath + "?subject=" + url.QueryEscape("bench/"+key)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return "", err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+pipeline.Token)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause // e.g. the request timeout, not a bare "deadline exceeded"
		}
		return "", fmt.Errorf("POST %s: %w", key, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusAccepted {
		problem, _ := io.ReadAll(io.LimitReader(resp.Body, 2<<10))
		return "", fmt.Errorf("POST %s: got %s %s, want 202 Accepted", key, resp.Status, strings.TrimSpace(string(problem)))
	}
	id, ok := strings.CutPrefix(resp.Header.Get("Location"), uploadsPath+"/")
	if !ok || id == "" {
		return "", fmt.Errorf("POST %s: got Location %q, want %s/<id>", key, resp.Header.Get("Location"), uploadsPath)
	}
	return id, nil
}
