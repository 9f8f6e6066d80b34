package chainfloor

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/bench/internal/floorhttp"
)

// front takes uploads over HTTP and answers each once its completed
// message arrives.
type front struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	log  *slog.Logger
	sub  *nats.Subscription
	ids  *floorhttp.IDs

	mu      sync.Mutex
	waiting map[string]chan struct{}
}

// newFront subscribes to the completed messages: before any request
// publishes, on the connection its publishes go out on, so that no
// completion can be missed.
func newFront(d Deps) (*front, error) {
	f := &front{pool: d.Pool, js: d.JS, log: d.Log, ids: floorhttp.NewIDs(), waiting: map[string]chan struct{}{}}
	sub, err := d.NC.Subscribe(CompletedPrefix+"*", f.completed)
	if err != nil {
		return nil, err
	}
	f.sub = sub
	return f, nil
}

func (f *front) close() { _ = f.sub.Unsubscribe() }

// completed ends the wait of the upload msg completes, if any.
func (f *front) completed(msg *nats.Msg) {
	id := strings.TrimPrefix(msg.Subject, CompletedPrefix)
	f.mu.Lock()
	c := f.waiting[id]
	delete(f.waiting, id)
	f.mu.Unlock()
	if c != nil {
		close(c)
	}
}

// accept records the upload, publishes its request, waits for its
// completion and answers 201 with its id in Location.
func (f *front) accept(w http.ResponseWriter, r *http.Request) {
	body, err := floorhttp.ReadBody(r)
	if err != nil {
		floorhttp.Fail(w, f.log, err)
		return
	}
	id := f.ids.Next()
	done := make(chan struct{})
	f.mu.Lock()
	f.waiting[id] = done
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.waiting, id)
		f.mu.Unlock()
	}()
	ctx := r.Context()
	if _, err := f.pool.Exec(ctx, `INSERT INTO `+Uploads+` (id, body) VALUES ($1, $2)`, id, body); err != nil {
		floorhttp.Fail(w, f.log, err)
		return
	}
	msg := &nats.Msg{Subject: RequestedPrefix + id, Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := f.js.PublishMsg(ctx, msg); err != nil {
		floorhttp.Fail(w, f.log, err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, WaitTimeout)
	defer cancel()
	select {
	case <-done:
	case <-wctx.Done():
		http.Error(w, "no completion within "+WaitTimeout.String(), http.StatusGatewayTimeout)
		return
	}
	w.Header().Set("Location", "/"+id)
	w.WriteHeader(http.StatusCreated)
}
