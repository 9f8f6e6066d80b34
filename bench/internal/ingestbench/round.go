package ingestbench

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// round runs round run of variant v: the HTTP path at each number of
// clients and accept only on one pipeline, then the latency floor on
// another (nats-server and chainfloor's programs), the HTTP accept floor
// on a third (nats-server and httpfloor), then the bulk path on a fourth
// (the services as the HTTP phases run them, ingest's API idle).
func (b *bench) round(ctx context.Context, v *Variant, run int) (Round, error) {
	var r Round
	if len(b.cfg.Clients) > 0 || b.cfg.AcceptClients > 0 {
		if err := b.httpPhases(ctx, v, run, &r); err != nil {
			return r, err
		}
	}
	if b.cfg.runsChain() {
		b.progress("round %d of %d, %s: latency floor, %d uploads from 1 client", run, b.cfg.Runs, v.Name, b.cfg.Uploads)
		l, err := b.chainPhase(ctx, v, run)
		if err != nil {
			return r, fmt.Errorf("latency floor: %w", err)
		}
		r.Chain = &l
	}
	if b.cfg.Floor {
		b.progress("round %d of %d, %s: HTTP accept floor, %d uploads from %s", run, b.cfg.Runs, v.Name, b.cfg.Uploads, clientsOf(b.cfg.FloorClients()))
		l, err := b.floorPhase(ctx, v, run)
		if err != nil {
			return r, fmt.Errorf("accept floor: %w", err)
		}
		r.Floor = &l
	}
	if b.cfg.BulkUploads > 0 {
		b.progress("round %d of %d, %s: bulk, %d request events straight to JetStream", run, b.cfg.Runs, v.Name, b.cfg.BulkUploads)
		ph, batches, err := b.bulk(ctx, v, run)
		if err != nil {
			return r, fmt.Errorf("bulk: %w", err)
		}
		r.Bulk, r.BulkBatches = &ph, batches
	}
	return r, nil
}

// httpPhases runs the warm-up, the HTTP path's phases and accept only on
// one pipeline.
func (b *bench) httpPhases(ctx context.Context, v *Variant, run int, r *Round) (err error) {
	p, err := b.start(ctx, v, fmt.Sprintf("round%d-http", run), deployed...)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.Stop()) }()
	cl := newClient(p.IngestURL, max(slices.Max(append([]int{b.cfg.AcceptClients}, b.cfg.Clients...)), 1))
	defer cl.close()
	if b.cfg.Warmup > 0 {
		b.progress("round %d of %d, %s: warm-up, %d uploads", run, b.cfg.Runs, v.Name, b.cfg.Warmup)
		if _, err := b.referencedPhase(ctx, p, cl, "warm-up", b.cfg.Warmup, min(16, b.cfg.Warmup), 0); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	analyze := func() error {
		if !b.cfg.Analyze {
			return nil
		}
		return p.Analyze(ctx)
	}
	for _, clients := range b.cfg.Clients {
		if err := analyze(); err != nil {
			return err
		}
		b.progress("round %d of %d, %s: HTTP path, %d uploads from %s", run, b.cfg.Runs, v.Name, b.cfg.Uploads, clientsOf(clients))
		l, err := b.referencedPhase(ctx, p, cl, fmt.Sprintf("c%d", clients), b.cfg.Uploads, clients, b.cfg.Check)
		if err != nil {
			return fmt.Errorf("%d clients: %w", clients, err)
		}
		r.Levels = append(r.Levels, l)
		v.Checked.Uploads += l.Checked.Uploads
		v.Checked.Objects += l.Checked.Objects
	}
	if b.cfg.AcceptClients > 0 {
		if err := analyze(); err != nil {
			return err
		}
		b.progress("round %d of %d, %s: accept only, %d uploads from %s", run, b.cfg.Runs, v.Name, b.cfg.Uploads, clientsOf(b.cfg.AcceptClients))
		l, err := b.acceptPhase(ctx, p, cl, b.cfg.Uploads, b.cfg.AcceptClients)
		if err != nil {
			return fmt.Errorf("accept only: %w", err)
		}
		r.Accept = &l
		v.Checked.Uploads += l.Checked.Uploads
		v.Checked.Objects += l.Checked.Objects
	}
	return nil
}
