package steptest

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// Worked is what Work made of an event.
type Worked[R any] struct {
	// Kind is step.Done when Work recorded the step's marker, step.Skipped
	// when the marker was there already.
	Kind step.Kind
	// Result is the result the marker records.
	Result R
	// Emitted is the event the step would publish (not published); nil for
	// a step without Emit.
	Emitted *events.Event
}

// Work runs s on ev in this process, as the runner does for a batch of one
// but without JetStream: it takes the claim on ev's upload, runs the side
// effect unless the step's marker exists, records the marker with the
// step's InTx in one transaction (the runtime's own marker store does both),
// and builds the event the step emits. pool's schema holds the step tables.
//
// It returns the error that would retry or dead-letter the message: the
// Effect's, the one InTx refused the item with, a conflict when the marker
// holds another fingerprint, or a busy claim held elsewhere.
func Work[R any](ctx context.Context, pool *pgxpool.Pool, s step.Step[R], ev *events.Event) (Worked[R], error) {
	var w Worked[R]
	claims, err := marker.NewStore(pool).ClaimMany(ctx, s.Name, []string{ev.ID})
	if err != nil {
		return w, err
	}
	defer claims.Release()
	m, found := claims.Marker(ev.ID)
	w.Kind = step.Skipped
	if !found {
		if !claims.Held(ev.ID) {
			return w, marker.ErrBusy
		}
		if m, w.Kind, err = record(ctx, claims, s, ev); err != nil {
			return w, err
		}
	}
	if m.Fingerprint != ev.SHA256 {
		return w, step.Conflict("upload %s was recorded with sha256 %s, this event has %s", ev.ID, m.Fingerprint, ev.SHA256)
	}
	if err := json.Unmarshal(m.Result, &w.Result); err != nil {
		return w, fmt.Errorf("marker %s/%s holds a bad result: %w", ev.ID, s.Name, err)
	}
	if s.Emit != nil {
		if w.Emitted, err = s.Emit(ev, w.Result); err != nil {
			return w, err
		}
	}
	return w, nil
}

// record runs the effect of ev and records its marker under claims.
func record[R any](ctx context.Context, claims *marker.Claims, s step.Step[R], ev *events.Event) (marker.Marker, step.Kind, error) {
	result, err := s.Effect(ctx, ev)
	if err != nil {
		return marker.Marker{}, 0, err
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return marker.Marker{}, 0, fmt.Errorf("encode result: %w", err)
	}
	items := []step.Item[R]{{Event: ev, Result: result}}
	var writes marker.Writes
	if s.InTx != nil {
		writes.InTx = func(ctx context.Context, tx pgx.Tx, won []int) ([]error, error) {
			if len(won) == 0 {
				return nil, nil
			}
			return s.InTx(ctx, tx, items)
		}
		if s.QueueInTx != nil {
			writes.Queue = func(b *pgx.Batch, _ []int) { s.QueueInTx(b, items) }
		}
	}
	stored, won, refused, err := claims.Record(ctx, []marker.Marker{{UploadID: ev.ID, Step: s.Name, Fingerprint: ev.SHA256, Result: raw}}, writes)
	switch {
	case err != nil:
		return marker.Marker{}, 0, err
	case refused != nil:
		return marker.Marker{}, 0, refused[0]
	case won[0]:
		return stored[0], step.Done, nil
	}
	return stored[0], step.Skipped, nil
}
