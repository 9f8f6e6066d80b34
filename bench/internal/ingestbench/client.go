package ingestbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/blobref/blobref/bench/internal/pipeline"
)

// uploadsPath is ingest's collection of uploads.
const uploadsPath = "/v1/uploads"

// contentType is the media type of every upload the benchmark sends.
const contentType = "application/octet-stream"

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

// answer is what ingest answered to one POST.
type answer struct {
	status int
	// id is the upload's id, from Location.
	id string
	// waited is true when ingest applied the wait preference.
	waited bool
	// retryAfter is the Retry-After of a 409 or 503 (0: none).
	retryAfter time.Duration
	// state is the body of a 200, 201 or 202.
	state uploadState
}

// uploadState is the part of ingest's upload representation the benchmark
// checks.
type uploadState struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Reference *struct {
		Blob struct {
			Size   int64  `json:"size"`
			SHA256 string `json:"sha256"`
		} `json:"blob"`
	} `json:"reference"`
}

// post uploads the size bytes body reads under key, with Prefer: wait=N
// when wait > 0, and returns ingest's answer. A status other than 200, 201,
// 202, 409 and 503 is an error naming the problem ingest described.
func (c *client) post(ctx context.Context, key string, body io.Reader, size int64, wait int) (answer, error) {
	resp, err := c.send(ctx, key, body, size, wait)
	if err != nil {
		return answer{}, err
	}
	defer discard(resp)
	a := answer{status: resp.StatusCode, waited: resp.Header.Get("Preference-Applied") != ""}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated, http.StatusAccepted:
	case http.StatusConflict, http.StatusServiceUnavailable:
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			a.retryAfter = time.Duration(s) * time.Second
		}
		return a, nil
	default:
		problem, _ := io.ReadAll(io.LimitReader(resp.Body, 2<<10))
		return a, fmt.Errorf("POST %s: got %s %s", key, resp.Status, strings.TrimSpace(string(problem)))
	}
	id, ok := strings.CutPrefix(resp.Header.Get("Location"), uploadsPath+"/")
	if !ok || id == "" {
		return a, fmt.Errorf("POST %s: got %s with Location %q, want %s/<id>", key, resp.Status, resp.Header.Get("Location"), uploadsPath)
	}
	a.id = id
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&a.state); err != nil {
		return a, fmt.Errorf("POST %s: %s with a body that is not an upload: %w", key, resp.Status, err)
	}
	if a.state.ID != id {
		return a, fmt.Errorf("POST %s: the body names upload %q, Location %q", key, a.state.ID, id)
	}
	return a, nil
}

// send sends the POST of an upload as ingest wants it: the size bytes
// body reads under key, with Prefer: wait=N when wait > 0.
func (c *client) send(ctx context.Context, key string, body io.Reader, size int64, wait int) (*http.Response, error) {
	u := c.base + uploadsPath + "?subject=" + url.QueryEscape(subjectOf(key))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+pipeline.Token)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", contentType)
	if wait > 0 {
		req.Header.Set("Prefer", "wait="+strconv.Itoa(wait))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause // e.g. the request timeout, not a bare "deadline exceeded"
		}
		return nil, fmt.Errorf("POST %s: %w", key, err)
	}
	return resp, nil
}

// discard reads what is left of a response's body, so that its
// connection can serve the next request, and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// subjectOf is the subject of the upload with Idempotency-Key key: one of
// its own.
func subjectOf(key string) string { return "bench/" + key }

// Retry policy of a caller that wants its upload referenced.
const (
	// retryUnwaited is the pause before retrying a 202 that ingest answered
	// without waiting (it is shutting down, say).
	retryUnwaited = 50 * time.Millisecond
	// maxRetryAfter caps a Retry-After.
	maxRetryAfter = 5 * time.Second
	// defaultRetryAfter is the pause after a 409 or 503 without one.
	defaultRetryAfter = 100 * time.Millisecond
)

// errNotReferenced is a 200 or 201 whose upload is not completed.
var errNotReferenced = errors.New("answered 200/201 without a completed reference")

// referenced uploads body under key as a caller that wants the reference
// does: Prefer: wait=wait, and the same request again with the same
// Idempotency-Key until ingest answers 200 or 201 (a 202 again at once, a
// 409 or 503 after its Retry-After). It checks that the answer carries the
// reference of these bytes, and returns the upload's id and how many
// requests it took. Each request has timeout to answer.
func (c *client) referenced(ctx context.Context, key string, body []byte, sha string, wait int, timeout time.Duration) (id string, requests int, err error) {
	for {
		requests++
		a, err := c.postWithin(ctx, key, body, wait, timeout)
		if err != nil {
			return "", requests, err
		}
		switch a.status {
		case http.StatusOK, http.StatusCreated:
			ref := a.state.Reference
			if a.state.State != "completed" || ref == nil {
				return "", requests, fmt.Errorf("POST %s: %w (state %q)", key, errNotReferenced, a.state.State)
			}
			if ref.Blob.SHA256 != sha || ref.Blob.Size != int64(len(body)) {
				return "", requests, fmt.Errorf("POST %s: referenced %d bytes with sha256 %s, want the %d sent with %s",
					key, ref.Blob.Size, ref.Blob.SHA256, len(body), sha)
			}
			return a.id, requests, nil
		case http.StatusAccepted:
			if !a.waited {
				err = sleep(ctx, retryUnwaited)
			}
		default: // 409, 503
			err = sleep(ctx, a.pause())
		}
		if err != nil {
			return "", requests, err
		}
	}
}

// accepted uploads body under key without Prefer and returns the upload's
// id once ingest answered 202 (or 200/201), retrying a 409 or 503 after its
// Retry-After.
func (c *client) accepted(ctx context.Context, key string, body []byte, timeout time.Duration) (id string, requests int, err error) {
	for {
		requests++
		a, err := c.postWithin(ctx, key, body, 0, timeout)
		if err != nil {
			return "", requests, err
		}
		if a.id != "" {
			return a.id, requests, nil
		}
		if err := sleep(ctx, a.pause()); err != nil {
			return "", requests, err
		}
	}
}

// floorDone sends a floor (named what) the request accepted sends ingest
// (a floor ignores the path and the headers) and returns the id its answer
// names in Location, once it answered want: 202 for the accept floor, 201
// for the latency floor. A floor answers nothing else but an error.
func (c *client) floorDone(ctx context.Context, what string, want int, key string, body []byte, timeout time.Duration) (id string, requests int, err error) {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("no answer within %s", timeout))
	defer cancel()
	resp, err := c.send(ctx, key, bytes.NewReader(body), int64(len(body)), 0)
	if err != nil {
		return "", 1, err
	}
	defer discard(resp)
	id, ok := strings.CutPrefix(resp.Header.Get("Location"), "/")
	if resp.StatusCode != want || !ok || id == "" {
		problem, _ := io.ReadAll(io.LimitReader(resp.Body, 2<<10))
		return "", 1, fmt.Errorf("POST %s to the %s: got %s with Location %q, want %d with /<id>: %s",
			key, what, resp.Status, resp.Header.Get("Location"), want, strings.TrimSpace(string(problem)))
	}
	return id, 1, nil
}

// postWithin posts body with a timeout of its own.
func (c *client) postWithin(ctx context.Context, key string, body []byte, wait int, timeout time.Duration) (answer, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("no answer within %s", timeout))
	defer cancel()
	return c.post(ctx, key, bytes.NewReader(body), int64(len(body)), wait)
}

// pause is how long to wait before retrying a 409 or 503.
func (a answer) pause() time.Duration {
	if a.retryAfter > 0 {
		return min(a.retryAfter, maxRetryAfter)
	}
	return defaultRetryAfter
}

// sleep waits for d or the end of ctx.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
