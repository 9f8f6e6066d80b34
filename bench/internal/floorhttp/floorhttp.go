// Package floorhttp is what the benchmark's HTTP floors (packages
// acceptfloor and chainfloor) share: reading a body, answering an error,
// handing out upload ids, and their commands' main.
package floorhttp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
)

// MaxBody is the largest body a floor accepts; a larger one gets 413.
const MaxBody = 1 << 20

// errTooLarge is a body over MaxBody.
var errTooLarge = errors.New("body over the limit")

// ReadBody reads the whole body into a buffer of its announced size.
func ReadBody(r *http.Request) ([]byte, error) {
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

// Fail is the one place a floor's error becomes a status: 413 for a body
// over the limit, 400 for one that did not arrive whole, 503 for the rest,
// which is logged.
func Fail(w http.ResponseWriter, log *slog.Logger, err error) {
	var status int
	var maxErr *http.MaxBytesError
	switch {
	case errors.Is(err, errTooLarge), errors.As(err, &maxErr):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, io.ErrUnexpectedEOF):
		status = http.StatusBadRequest
	default:
		status = http.StatusServiceUnavailable
		log.Error("upload not taken", "err", err)
	}
	http.Error(w, http.StatusText(status), status)
}

// IDs hands out upload ids: a random prefix of the process and a counter,
// unique in a floor's table without a random read per upload.
type IDs struct {
	prefix string
	n      atomic.Uint64
}

// NewIDs returns ids with a fresh prefix.
func NewIDs() *IDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &IDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

// Next is the next id.
func (i *IDs) Next() string { return i.prefix + strconv.FormatUint(i.n.Add(1), 10) }

// Main is a floor command's main: it reads the configuration with config
// (a bad one exits 2), runs run until SIGTERM or SIGINT, and exits 1 when
// run fails. Errors go to standard error, named by command.
func Main[C any](command string, config func() (C, error), run func(context.Context, C, *slog.Logger) error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := config()
	if err != nil {
		log.Error(command, "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, log)
	stop()
	if err != nil {
		log.Error(command, "err", err)
		os.Exit(1)
	}
}
