// Package console is blobrefctl's web console for operators: it finds an
// upload by id, subject or Idempotency-Key and shows its steps, timeline,
// events and dead letters; it shows each step's consumer lag and
// redeliveries; and it lists the dead letters and re-drives them.
//
// The pages are plain HTML, JavaScript and CSS embedded in the binary. They
// hold no data: they call the JSON API under /api/ with the operator's
// bearer token, which needs the read scope, and the operate scope to
// re-drive. The API reads through package uploadview and re-drives with
// package republish, as `blobrefctl dlq redrive` does.
package console

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/uploadview"
)

//go:embed assets
var assets embed.FS

// DefaultAddr is where the console listens unless told otherwise: on the
// loopback interface only.
const DefaultAddr = "127.0.0.1:8090"

// Server serves the console.
type Server struct {
	View   *uploadview.View
	JS     jetstream.JetStream
	Tokens *Tokens
	Log    *slog.Logger
}

// shutdownTimeout bounds how long Run waits for requests in flight once
// its context is done.
const shutdownTimeout = 10 * time.Second

// Run serves the console on ln until ctx is done, then shuts down
// gracefully.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// Handler returns the console's HTTP handler: the pages at /, the API under
// /api/.
func (s *Server) Handler() http.Handler {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.Handle("GET /api/me", s.api(ScopeRead, s.me))
	mux.Handle("GET /api/uploads", s.api(ScopeRead, s.findUploads))
	mux.Handle("GET /api/uploads/{id}", s.api(ScopeRead, s.getUpload))
	mux.Handle("GET /api/consumers", s.api(ScopeRead, s.consumers))
	mux.Handle("GET /api/dead-letters", s.api(ScopeRead, s.deadLetters))
	mux.Handle("POST /api/dead-letters/{seq}/redrive", s.api(ScopeOperate, s.redrive))
	mux.Handle("GET /api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "no such API", r.Method+" "+r.URL.Path+" is not part of the console's API")
	}))
	return secure(mux)
}

// secure sets the headers every answer carries: the pages load only their
// own scripts and styles, are never framed, and send no referrer.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}
