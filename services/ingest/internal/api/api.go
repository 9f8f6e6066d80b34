// Package api is ingest's HTTP front door: POST /v1/uploads,
// GET /v1/uploads/{id} and GET /v1/references, with bearer-token
// authentication, subject prefixes, request validation, size limits, body
// timeouts, per-caller limits, Prefer: wait, and every error answered as
// application/problem+json by one function (problemFor).
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/auth"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// Uploads is the operation behind the API.
type Uploads interface {
	Submit(ctx context.Context, sub uploads.Submission) (uploads.Result, error)
	Status(ctx context.Context, caller, id string) (uploads.State, error)
	CurrentReference(ctx context.Context, owner, subject string) (events.Reference, error)
}

// Authenticator maps bearer tokens to callers.
type Authenticator interface {
	Authenticate(token string) (auth.Caller, bool)
}

// Options configure the API.
type Options struct {
	Uploads Uploads
	Tokens  Authenticator
	// MaxUploadSize is the largest body accepted, in bytes.
	MaxUploadSize int64
	// AllowedTypes is the allow-list of content types.
	AllowedTypes MediaTypes
	// WaitMax caps Prefer: wait; 0 ignores the preference.
	WaitMax time.Duration
	// Body says how a request body must keep arriving.
	Body BodyTimeouts
	// Limits bound each caller's requests.
	Limits CallerLimits
	// ReadHeaderTimeout bounds the wait for a request's headers [10s].
	ReadHeaderTimeout time.Duration
	// Metrics, if set, counts requests and bytes.
	Metrics *Metrics
	// Logger logs one line per request [slog.Default()].
	Logger *slog.Logger
}

// API is the HTTP handler of the ingest API.
type API struct {
	opts   Options
	mux    *http.ServeMux
	limits *limiter
	// quit ends every Prefer: wait early when the server shuts down.
	quit        context.Context
	stopWaiting context.CancelFunc
}

// Paths of the API.
const (
	// UploadsPath is the collection uploads are POSTed to.
	UploadsPath = "/v1/uploads"
	// ReferencesPath answers a caller's current reference of a subject.
	ReferencesPath = "/v1/references"
)

// New returns the API handler.
func New(opts Options) *API {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &API{opts: opts, mux: http.NewServeMux(), limits: newLimiter(opts.Limits)}
	a.quit, a.stopWaiting = context.WithCancel(context.Background())
	a.mux.HandleFunc("POST "+UploadsPath, a.postUpload)
	a.mux.HandleFunc("GET "+UploadsPath+"/{id}", a.getUpload)
	a.mux.HandleFunc("GET "+ReferencesPath, a.getReference)
	return a
}

// StopWaiting ends the waits of Prefer: wait requests in flight and makes
// new ones answer at once; in-flight uploads go on.
func (a *API) StopWaiting() { a.stopWaiting() }

// Location is the URL path of upload id.
func Location(id string) string { return UploadsPath + "/" + id }

// ServeHTTP routes r, and counts and logs it once it has been answered.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	info := &requestInfo{}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	rec := &statusRecorder{ResponseWriter: w}
	_, route := a.mux.Handler(r)
	if route == "" {
		route = "unmatched"
	}
	done := a.opts.Metrics.start(route)
	if route == "unmatched" {
		a.unmatched(rec, r)
	} else {
		a.mux.ServeHTTP(rec, r)
	}
	done()
	a.opts.Metrics.observe(route, rec.status(), time.Since(start), info.bytes)

	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("route", route), slog.Int("status", rec.status()),
		slog.Duration("duration", time.Since(start)),
	}
	if info.id != "" {
		attrs = append(attrs, slog.String("id", info.id))
	}
	if info.caller != "" {
		attrs = append(attrs, slog.String("caller", info.caller))
	}
	if info.bytes > 0 {
		attrs = append(attrs, slog.Int64("bytes", info.bytes))
	}
	level := slog.LevelInfo
	if info.err != nil {
		attrs = append(attrs, slog.String("error", info.err.Error()))
		switch {
		case rec.status() == http.StatusInternalServerError:
			level = slog.LevelError
		case rec.status() >= 500:
			level = slog.LevelWarn
		}
	}
	a.opts.Logger.LogAttrs(r.Context(), level, "request", attrs...)
}

// unmatched answers a request no route matches: 404 or 405 as problems.
func (a *API) unmatched(w http.ResponseWriter, r *http.Request) {
	cw := &captureWriter{header: http.Header{}}
	a.mux.ServeHTTP(cw, r)
	switch cw.code {
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		a.writeProblem(w, r, &routeError{status: cw.code, allow: cw.header.Get("Allow")})
	default: // e.g. a redirect to the cleaned path
		for k, v := range cw.header {
			w.Header()[k] = v
		}
		w.WriteHeader(cw.code)
		_, _ = w.Write(cw.body)
	}
}

func (a *API) authenticate(r *http.Request, scope string) (auth.Caller, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return auth.Caller{}, &authError{}
	}
	token, ok := auth.BearerToken(values[0])
	if !ok || len(values) > 1 {
		return auth.Caller{}, &authError{invalid: true}
	}
	caller, ok := a.opts.Tokens.Authenticate(token)
	if !ok {
		return auth.Caller{}, &authError{invalid: true}
	}
	infoOf(r).caller = caller.Name
	if err := a.limits.allow(caller.Name); err != nil {
		return auth.Caller{}, err
	}
	if !caller.Can(scope) {
		return auth.Caller{}, &scopeError{scope: scope}
	}
	return caller, nil
}

// postUpload is POST /v1/uploads?subject=...: the body is the bytes.
func (a *API) postUpload(w http.ResponseWriter, r *http.Request) {
	caller, err := a.authenticate(r, auth.ScopeUpload)
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	done, err := a.limits.startUpload(caller.Name)
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	defer done()
	subject, subjErr := checkSubject(r.URL.Query()["subject"])
	key, keyErr := parseKey(r.Header.Values("Idempotency-Key"))
	if err := joinParams(subjErr, keyErr); err != nil {
		a.writeProblem(w, r, err)
		return
	}
	if err := caller.CheckSubject(subject); err != nil {
		a.writeProblem(w, r, err)
		return
	}
	contentType, err := a.opts.AllowedTypes.checkContentType(r.Header.Get("Content-Type"))
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	if r.ContentLength > a.opts.MaxUploadSize {
		a.writeProblem(w, r, &tooLargeError{limit: a.opts.MaxUploadSize})
		return
	}
	wait, _ := parseWait(r.Header.Values("Prefer"), a.opts.WaitMax)
	if a.quit.Err() != nil {
		wait = 0 // shutting down
	}
	info := infoOf(r)
	id := uploads.ID(caller.Name, key)
	info.id = id

	guarded := guardBody(w, r.Body, a.opts.Body)
	info.body = guarded
	body := &countingReader{r: http.MaxBytesReader(w, guarded, a.opts.MaxUploadSize)}
	res, err := a.opts.Uploads.Submit(r.Context(), uploads.Submission{
		Caller: caller.Name, Key: key, Subject: subject, ContentType: contentType,
		Body: body, Size: r.ContentLength, Wait: wait, Interrupt: a.quit,
	})
	info.bytes = body.n
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	status := http.StatusAccepted
	if res.State.State == uploads.StateCompleted {
		status = http.StatusOK
		if res.Created {
			status = http.StatusCreated
		}
	}
	w.Header().Set("Location", Location(id))
	if res.Waited {
		w.Header().Set("Preference-Applied", "wait="+strconv.Itoa(int(wait/time.Second)))
	}
	writeJSON(w, status, res.State)
}

// getUpload is GET /v1/uploads/{id}.
func (a *API) getUpload(w http.ResponseWriter, r *http.Request) {
	caller, err := a.authenticate(r, auth.ScopeRead)
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	id := r.PathValue("id")
	infoOf(r).id = id
	st, err := a.opts.Uploads.Status(r.Context(), caller.Name, id)
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// joinParams merges the invalid parameters of errs into one error.
func joinParams(errs ...error) error {
	var all paramError
	for _, err := range errs {
		var pe *paramError
		if errors.As(err, &pe) {
			all.params = append(all.params, pe.params...)
		}
	}
	if len(all.params) == 0 {
		return nil
	}
	return &all
}

// requestInfo is what a handler learns about a request, for its log line.
type requestInfo struct {
	id, caller string
	bytes      int64
	err        error
	body       *guardedBody // the body of an upload, once read through
}

type infoKey struct{}

func infoOf(r *http.Request) *requestInfo {
	info, _ := r.Context().Value(infoKey{}).(*requestInfo)
	if info == nil {
		return &requestInfo{}
	}
	return info
}
