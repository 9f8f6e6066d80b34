package acceptfloor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// handler accepts one upload per request.
type handler struct {
	rec *Recorder
	js  jetstream.JetStream
	ids *ids
	log *slog.Logger
}

// errTooLarge is a body over MaxBody.
var errTooLarge = errors.New("body over the limit")

// accept reads the body, publishes it and records it at once, and answers
// 202 with the upload's id in Location once both are done.
func (h *handler) accept(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	id := h.ids.next()
	paf, err := h.js.PublishMsgAsync(&nats.Msg{Subject: SubjectPrefix + id, Data: body})
	if err != nil {
		h.fail(w, err)
		return
	}
	recErr := h.rec.Record(r.Context(), id, body)
	select {
	case <-paf.Ok():
	case err := <-paf.Err():
		h.fail(w, err)
		return
	case <-r.Context().Done():
		return
	}
	if recErr != nil {
		h.fail(w, recErr)
		return
	}
	w.Header().Set("Location", "/"+id)
	w.WriteHeader(http.StatusAccepted)
}

// fail is the one place an error becomes a status: 413 for a body over the
// limit, 400 for one that did not arrive whole, 503 for the rest.
func (h *handler) fail(w http.ResponseWriter, err error) {
	var status int
	var maxErr *http.MaxBytesError
	switch {
	case errors.Is(err, errTooLarge), errors.As(err, &maxErr):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, io.ErrUnexpectedEOF):
		status = http.StatusBadRequest
	default:
		status = http.StatusServiceUnavailable
		h.log.Error("upload not accepted", "err", err)
	}
	http.Error(w, http.StatusText(status), status)
}

// readBody reads the whole body into a buffer of its announced size.
func readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBody {
		return nil, errTooLarge
	}
	if r.ContentLength < 0 {
		return io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	}
	body := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return nil, err
	}
	return body, nil
}

// ids hands out upload ids: a random prefix of the process and a counter,
// unique in the floor's table without a random read per upload.
type ids struct {
	prefix string
	n      atomic.Uint64
}

func newIDs() *ids {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &ids{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (i *ids) next() string { return i.prefix + strconv.FormatUint(i.n.Add(1), 10) }
