package acceptfloor

import (
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/bench/internal/floorhttp"
)

// handler accepts one upload per request.
type handler struct {
	rec *Recorder
	js  jetstream.JetStream
	ids *floorhttp.IDs
	log *slog.Logger
}

// accept reads the body, publishes it and records it at once, and answers
// 202 with the upload's id in Location once both are done.
func (h *handler) accept(w http.ResponseWriter, r *http.Request) {
	body, err := floorhttp.ReadBody(r)
	if err != nil {
		floorhttp.Fail(w, h.log, err)
		return
	}
	id := h.ids.Next()
	paf, err := h.js.PublishMsgAsync(&nats.Msg{Subject: SubjectPrefix + id, Data: body})
	if err != nil {
		floorhttp.Fail(w, h.log, err)
		return
	}
	recErr := h.rec.Record(r.Context(), id, body)
	select {
	case <-paf.Ok():
	case err := <-paf.Err():
		floorhttp.Fail(w, h.log, err)
		return
	case <-r.Context().Done():
		return
	}
	if recErr != nil {
		floorhttp.Fail(w, h.log, recErr)
		return
	}
	w.Header().Set("Location", "/"+id)
	w.WriteHeader(http.StatusAccepted)
}
