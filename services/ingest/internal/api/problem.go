package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/blobref/blobref/services/ingest/internal/auth"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// ProblemTypeBase prefixes the type URI of every problem ingest answers
// with; the rest names the problem, e.g. urn:problem-type:blobref:content-too-large.
const ProblemTypeBase = "urn:problem-type:blobref:"

// ProblemContentType is the media type of every error response (RFC 9457).
const ProblemContentType = "application/problem+json"

// retryAfter is the Retry-After of 409 and 503 answers, in seconds.
const retryAfter = 1

// retryAfterFull is the Retry-After of a full staging store (507), in
// seconds: space returns as staged bodies are stored and deleted.
const retryAfterFull = 30

// retryAfterQuota is the Retry-After of a staging quota exceeded, in
// seconds: the quota frees up as the caller's uploads complete.
const retryAfterQuota = 5

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// InvalidParams names each bad part of the request (400).
	InvalidParams []InvalidParam `json:"invalid-params,omitempty"`
	// MaxSize is the upload size limit in bytes (413).
	MaxSize int64 `json:"max-size,omitempty"`
	// Allowed lists the accepted media types (415).
	Allowed []string `json:"allowed,omitempty"`
	// ID is the upload id the problem concerns (409, 422).
	ID string `json:"id,omitempty"`
	// Prefixes are the subject prefixes the token may use (403).
	Prefixes []string `json:"prefixes,omitempty"`

	header http.Header // response headers that go with it
}

// InvalidParam is one bad part of a request: a query parameter, a header
// or the body.
type InvalidParam struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// The errors the HTTP layer itself detects, before the operation runs.
type (
	// authError: no or an unknown bearer token (401).
	authError struct{ invalid bool }
	// scopeError: the token lacks a scope (403).
	scopeError struct{ scope string }
	// paramError: bad query parameters or headers (400).
	paramError struct{ params []InvalidParam }
	// mediaTypeError: a content type not on the allow-list (415).
	mediaTypeError struct {
		contentType string
		allowed     []string
		rule        string // the event contract's rule it breaks, if that is why
	}
	// tooLargeError: the announced body is over the limit (413).
	tooLargeError struct{ limit int64 }
	// routeError: no such resource or method (404, 405).
	routeError struct {
		status int
		allow  string
	}
)

func (e *authError) Error() string {
	if e.invalid {
		return "unknown bearer token"
	}
	return "no bearer token"
}
func (e *scopeError) Error() string { return "token lacks scope " + e.scope }
func (e *paramError) Error() string { return fmt.Sprintf("invalid request: %v", e.params) }
func (e *mediaTypeError) Error() string {
	if e.rule != "" {
		return fmt.Sprintf("content type %q: %s", clip(e.contentType), e.rule)
	}
	return fmt.Sprintf("content type %q not allowed", clip(e.contentType))
}
func (e *tooLargeError) Error() string { return fmt.Sprintf("body larger than %d bytes", e.limit) }
func (e *routeError) Error() string    { return http.StatusText(e.status) }

func invalid(name, reason string) error {
	return &paramError{params: []InvalidParam{{Name: name, Reason: reason}}}
}

// problemFor maps an error to the problem answered for it. It is the one
// place that decides an error's status. Dependency errors never reach the
// body: their text is logged, the client reads what to do.
func problemFor(err error, limit int64) Problem {
	var (
		authErr     *authError
		scopeErr    *scopeError
		paramErr    *paramError
		mediaErr    *mediaTypeError
		tooLarge    *tooLargeError
		maxBytesErr *http.MaxBytesError
		routeErr    *routeError
		mismatch    *uploads.MismatchError
		bodyErr     *uploads.BodyError
		unavailErr  *uploads.UnavailableError
		subjectErr  *auth.SubjectError
		requestErr  *uploads.RequestError
		slowErr     *SlowBodyError
		limitErr    *LimitError
		quotaErr    *uploads.QuotaError
		fullErr     *uploads.StoreFullError
	)
	switch {
	case errors.As(err, &authErr):
		p := newProblem(http.StatusUnauthorized, "unauthorized", "Unauthorized",
			"send a bearer token: Authorization: Bearer <token>")
		challenge := `Bearer realm="blobref"`
		if authErr.invalid {
			p.Detail = "the bearer token is not valid"
			challenge += `, error="invalid_token"`
		}
		p.header.Set("WWW-Authenticate", challenge)
		return p
	case errors.As(err, &scopeErr):
		p := newProblem(http.StatusForbidden, "forbidden", "Forbidden",
			fmt.Sprintf("the token does not grant the %q scope", scopeErr.scope))
		p.header.Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="blobref", error="insufficient_scope", scope=%q`, scopeErr.scope))
		return p
	case errors.As(err, &limitErr):
		p := newProblem(http.StatusTooManyRequests, "too-many-requests", "Too many requests",
			"this caller sends "+limitErr.What+"; retry after Retry-After seconds")
		p.header.Set("Retry-After", strconv.Itoa(retryAfterSeconds(limitErr.RetryAfter)))
		return p
	case errors.As(err, &subjectErr):
		p := newProblem(http.StatusForbidden, "subject-forbidden", "Subject forbidden",
			"the token may use subjects under "+strings.Join(subjectErr.Prefixes, ", ")+" only")
		p.Prefixes = subjectErr.Prefixes
		return p
	case errors.As(err, &slowErr):
		return newProblem(http.StatusRequestTimeout, "request-timeout", "Request timeout",
			"the body stopped arriving, or arrived too slowly; send it again with the same Idempotency-Key")
	case errors.As(err, &quotaErr):
		p := newProblem(http.StatusTooManyRequests, "staging-quota-exceeded", "Staging quota exceeded",
			fmt.Sprintf("this caller's large uploads in progress would exceed its quota of %d bytes; retry once some have completed", quotaErr.Limit))
		p.MaxSize = quotaErr.Limit
		p.header.Set("Retry-After", strconv.Itoa(retryAfterQuota))
		return p
	case errors.As(err, &requestErr):
		name := paramOfAttribute(requestErr.Attribute)
		p := newProblem(http.StatusBadRequest, "invalid-request", "Invalid request",
			"invalid "+name+": "+requestErr.Msg)
		p.InvalidParams = []InvalidParam{{Name: name, Reason: requestErr.Msg}}
		return p
	case errors.As(err, &paramErr):
		names := make([]string, len(paramErr.params))
		for i, ip := range paramErr.params {
			names[i] = ip.Name
		}
		p := newProblem(http.StatusBadRequest, "invalid-request", "Invalid request",
			"invalid "+strings.Join(names, ", ")+": "+paramErr.params[0].Reason)
		p.InvalidParams = paramErr.params
		return p
	case errors.Is(err, uploads.ErrEmptyBody):
		p := newProblem(http.StatusBadRequest, "invalid-request", "Invalid request", "the body is empty: send the bytes to upload")
		p.InvalidParams = []InvalidParam{{Name: "body", Reason: "empty"}}
		return p
	case errors.As(err, &mediaErr):
		p := newProblem(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type",
			fmt.Sprintf("Content-Type %q is not accepted", clip(mediaErr.contentType)))
		switch {
		case mediaErr.contentType == "":
			p.Detail = "a Content-Type is required"
		case mediaErr.rule != "":
			p.Detail = "the Content-Type is not accepted: " + mediaErr.rule
		}
		p.Allowed = mediaErr.allowed
		p.header.Set("Accept-Post", strings.Join(mediaErr.allowed, ", "))
		return p
	case errors.As(err, &tooLarge), errors.As(err, &maxBytesErr):
		p := newProblem(http.StatusRequestEntityTooLarge, "content-too-large", "Content too large",
			fmt.Sprintf("the body is larger than the %d bytes allowed", limit))
		p.MaxSize = limit
		return p
	case errors.As(err, &routeErr):
		p := newProblem(routeErr.status, "not-found", "Not found", "no such resource")
		if routeErr.status == http.StatusMethodNotAllowed {
			p = newProblem(routeErr.status, "method-not-allowed", "Method not allowed", "allowed: "+routeErr.allow)
			p.header.Set("Allow", routeErr.allow)
		}
		return p
	case errors.Is(err, uploads.ErrNotFound):
		return newProblem(http.StatusNotFound, "not-found", "Not found", "no upload with this id")
	case errors.Is(err, uploads.ErrNoReference):
		return newProblem(http.StatusNotFound, "not-found", "Not found", "this caller has no current reference of the subject")
	case errors.Is(err, uploads.ErrBusy):
		p := newProblem(http.StatusConflict, "idempotency-key-in-use", "Idempotency key in use",
			"a request with this Idempotency-Key is being processed; retry when it has finished")
		p.header.Set("Retry-After", strconv.Itoa(retryAfter))
		return p
	case errors.As(err, &mismatch):
		p := newProblem(http.StatusUnprocessableEntity, "idempotency-key-reused", "Idempotency key reused",
			"this Idempotency-Key was first used with another "+strings.Join(mismatch.Fields, ", ")+
				"; use a new key for a new upload")
		p.ID = mismatch.ID
		return p
	case errors.As(err, &bodyErr):
		return newProblem(http.StatusBadRequest, "incomplete-body", "Incomplete body",
			"the body could not be read to its end; send it again")
	case errors.Is(err, uploads.ErrOverloaded):
		p := newProblem(http.StatusServiceUnavailable, "overloaded", "Service overloaded",
			"too many requests are in progress right now; retry with the same Idempotency-Key")
		p.header.Set("Retry-After", strconv.Itoa(retryAfter))
		return p
	case errors.As(err, &fullErr):
		p := newProblem(http.StatusInsufficientStorage, "storage-full", "Insufficient storage",
			"there is no room to stage the body right now; nothing was recorded: retry after Retry-After seconds with the same Idempotency-Key")
		p.header.Set("Retry-After", strconv.Itoa(retryAfterFull))
		return p
	case errors.Is(err, uploads.ErrStaleStaging), errors.As(err, &unavailErr):
		p := newProblem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"the upload could not be handed to the pipeline right now; retry with the same Idempotency-Key")
		p.header.Set("Retry-After", strconv.Itoa(retryAfter))
		return p
	default:
		return newProblem(http.StatusInternalServerError, "internal", "Internal error",
			"something went wrong on our side; retry with the same Idempotency-Key")
	}
}

func newProblem(status int, slug, title, detail string) Problem {
	return Problem{Type: ProblemTypeBase + slug, Title: title, Status: status, Detail: detail, header: http.Header{}}
}

// writeProblem answers r with the problem for err.
func (a *API) writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	p := problemFor(err, a.opts.MaxUploadSize)
	p.Instance = r.URL.Path
	abandonBody(w, r)
	for k, v := range p.header {
		w.Header()[k] = v
	}
	if info := infoOf(r); info != nil {
		info.err = err
	}
	body, _ := json.Marshal(p)
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// paramOfAttribute names the part of a request an event attribute comes
// from.
func paramOfAttribute(attr string) string {
	switch attr {
	case "subject":
		return "subject"
	case "datacontenttype":
		return "Content-Type"
	case "id":
		return "Idempotency-Key"
	case "":
		return "request"
	}
	return attr
}

// abandonBody makes the server give up on what is left of r's body: the
// answer closes the connection, and nothing more is read from it, so that
// a client that keeps its body coming cannot hold the request after its
// answer.
func abandonBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	if b := infoOf(r).body; b != nil && b.state == bodyRead {
		return
	}
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// clip shortens a client's value quoted in a problem to at most 64 bytes
// of valid UTF-8.
func clip(s string) string {
	const max = 64
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
