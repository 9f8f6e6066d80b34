package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/blobref/blobref/internal/bearer"
	"github.com/blobref/blobref/internal/streamscan"
	"github.com/blobref/blobref/internal/uploadview"
	"github.com/blobref/blobref/tools/blobrefctl/internal/republish"
)

// handler answers an API request of op with a value to send as JSON, or an
// error that fail maps to a status.
type handler func(r *http.Request, op Operator) (any, error)

// badRequest is an error in the request, which the answer names.
type badRequest struct{ detail string }

func (e *badRequest) Error() string { return e.detail }

func bad(format string, args ...any) error { return &badRequest{fmt.Sprintf(format, args...)} }

// conflict is a request the state of the pipeline refuses.
type conflict struct{ detail string }

func (e *conflict) Error() string { return e.detail }

// api authenticates the request's bearer token, checks it holds scope and
// answers with h.
func (s *Server) api(scope string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		token, ok := bearer.FromHeader(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="blobref console"`)
			writeProblem(w, http.StatusUnauthorized, "no bearer token", "send Authorization: Bearer <token>, a token of CONSOLE_TOKENS_FILE or CONSOLE_TOKENS")
			return
		}
		op, ok := s.Tokens.Authenticate(token)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="blobref console", error="invalid_token"`)
			writeProblem(w, http.StatusUnauthorized, "unknown token", "the bearer token is none of the console's tokens")
			return
		}
		if !op.Can(scope) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="blobref console", error="insufficient_scope", scope="`+scope+`"`)
			writeProblem(w, http.StatusForbidden, "missing scope", fmt.Sprintf("%s's token lacks the %s scope", op.Name, scope))
			return
		}
		v, err := h(r, op)
		if err != nil {
			s.fail(w, r, op, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(v); err != nil {
			s.Log.Warn("console: write answer", "path", r.URL.Path, "error", err)
		}
	})
}

// fail answers a request whose handler failed: the one place that maps
// errors to statuses. Errors of Postgres and JetStream are logged, not
// sent.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, op Operator, err error) {
	var br *badRequest
	var c *conflict
	switch {
	case errors.As(err, &br):
		writeProblem(w, http.StatusBadRequest, "bad request", br.detail)
	case errors.As(err, &c):
		writeProblem(w, http.StatusConflict, "conflict", c.detail)
	case errors.Is(err, uploadview.ErrNotFound):
		writeProblem(w, http.StatusNotFound, "not found", strings.TrimPrefix(err.Error(), "uploadview: "))
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The operator left; nobody reads the answer.
	default:
		s.Log.Error("console: request failed", "operator", op.Name, "method", r.Method, "path", r.URL.Path, "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "pipeline unavailable",
			"reading or writing Postgres or JetStream failed; the console's log says why")
	}
}

// writeProblem answers with an RFC 9457 problem.
func writeProblem(w http.ResponseWriter, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": title, "status": status, "detail": detail})
}

func (s *Server) me(_ *http.Request, op Operator) (any, error) { return op, nil }

// limit reads the limit query parameter: def when absent, at most most.
func limit(r *http.Request, def, most int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, bad("limit: %q is not a number from 1 to %d", v, most)
	}
	return n, nil
}

func (s *Server) findUploads(r *http.Request, _ Operator) (any, error) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" {
		return nil, bad("q: give an upload id, a subject (users/42/avatar, or users/42/* for those under it) or an Idempotency-Key")
	}
	n, err := limit(r, uploadview.DefaultLimit, 500)
	if err != nil {
		return nil, err
	}
	found, err := s.View.Find(r.Context(), q, n)
	if err != nil {
		return nil, err
	}
	return map[string]any{"uploads": found}, nil
}

func (s *Server) getUpload(r *http.Request, _ Operator) (any, error) {
	return s.View.Get(r.Context(), r.PathValue("id"))
}

func (s *Server) consumers(r *http.Request, _ Operator) (any, error) {
	cs, err := s.View.Consumers(r.Context())
	if err != nil {
		return nil, err
	}
	ss, err := s.View.Streams(r.Context())
	if err != nil {
		return nil, err
	}
	return map[string]any{"consumers": cs, "streams": ss}, nil
}

// deadLetterFilter reads the subject and reason query parameters.
func deadLetterFilter(r *http.Request) (uploadview.DeadLetterFilter, error) {
	f := uploadview.DeadLetterFilter{Subject: strings.TrimSpace(r.URL.Query().Get("subject")), Reason: strings.TrimSpace(r.URL.Query().Get("reason"))}
	if f.Subject != "" && !strings.HasPrefix(f.Subject, "uploads.") && !strings.HasPrefix(f.Subject, "dlq.uploads.") {
		return f, bad("subject: %q is not a subject of UPLOADS (uploads.>) or UPLOADS_DLQ (dlq.uploads.>)", f.Subject)
	}
	return f, nil
}

func (s *Server) deadLetters(r *http.Request, _ Operator) (any, error) {
	f, err := deadLetterFilter(r)
	if err != nil {
		return nil, err
	}
	n, err := limit(r, 200, 5000)
	if err != nil {
		return nil, err
	}
	letters, more := []uploadview.Letter{}, false
	err = uploadview.DeadLetters(r.Context(), s.JS, f, func(l uploadview.Letter) error {
		if len(letters) == n {
			more = true
			return streamscan.Stop
		}
		letters = append(letters, l)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"deadLetters": letters, "more": more}, nil
}

// redriven is the answer to a re-drive.
type redriven struct {
	Letter    uploadview.Letter `json:"letter"`
	MsgID     string            `json:"msgId"`
	NewSeq    uint64            `json:"newSeq"`
	Duplicate bool              `json:"duplicate"`
}

func (s *Server) redrive(r *http.Request, op Operator) (any, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		return nil, bad("%q is not a sequence of UPLOADS_DLQ", r.PathValue("seq"))
	}
	var done *republish.Redriven
	_, err = republish.Redrive{DeadLetterFilter: uploadview.DeadLetterFilter{Seq: seq}}.Run(r.Context(), s.JS, func(rd republish.Redriven) { done = &rd })
	if err != nil {
		return nil, err
	}
	switch {
	case done == nil:
		return nil, fmt.Errorf("%w: UPLOADS_DLQ holds no dead letter at #%d (re-driven already?)", uploadview.ErrNotFound, seq)
	case done.Skipped != nil:
		return nil, &conflict{fmt.Sprintf("UPLOADS_DLQ #%d is not a dead letter blobref wrote (%v): it is never re-driven", seq, done.Skipped)}
	}
	s.Log.Info("console: re-drove a dead letter", "operator", op.Name, "seq", seq, "subject", done.Subject,
		"reason", done.Reason, "msg_id", done.MsgID, "new_seq", done.NewSeq, "duplicate", done.Duplicate)
	return redriven{Letter: done.Letter, MsgID: done.MsgID, NewSeq: done.NewSeq, Duplicate: done.Duplicate}, nil
}
