package ingestbench

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/bench/internal/load"
)

// bulkWindow is the producer's window of unacknowledged publishes in the
// bulk phase, as in make bench.
const bulkWindow = 4096

// bulk runs the bulk phase of round run of variant v: BulkUploads request
// events published straight to JetStream as fast as it accepts them,
// followed to completion and until ingest's read model has folded them in,
// then a sample checked whole; with the services' mean batches over it.
// The pipeline is the one the HTTP phases
// run, as it is deployed: blobwriter and refwriter, and ingest, whose read
// model folds in every upload's events however it came in. Only its API
// is idle.
func (b *bench) bulk(ctx context.Context, v *Variant, run int) (_ load.Phase, _ map[string]float64, err error) {
	p, err := b.start(ctx, v, fmt.Sprintf("round%d-bulk", run), deployed...)
	if err != nil {
		return load.Phase{}, nil, err
	}
	defer func() { err = errors.Join(err, p.Stop()) }()
	pnc, err := nats.Connect(p.NATSURL, nats.Name("bench-producer"))
	if err != nil {
		return load.Phase{}, nil, fmt.Errorf("ingestbench: %w", err)
	}
	defer pnc.Close()
	tnc, err := nats.Connect(p.NATSURL, nats.Name("bench-tracker"))
	if err != nil {
		return load.Phase{}, nil, fmt.Errorf("ingestbench: %w", err)
	}
	defer tnc.Close()
	producer, err := load.NewProducer(pnc, bulkWindow)
	if err != nil {
		return load.Phase{}, nil, err
	}
	tracker, err := load.Track(tnc)
	if err != nil {
		return load.Phase{}, nil, err
	}
	defer tracker.Close()
	set, err := load.NewSet(b.keys("bulk"), b.cfg.BulkUploads, b.cfg.UploadSize, uint64(run)) // #nosec G115 -- a run number, from 0 up
	if err != nil {
		return load.Phase{}, nil, err
	}
	before, err := readBatches(ctx, p)
	if err != nil {
		return load.Phase{}, nil, err
	}
	ph, err := load.Measure(ctx, producer, tracker, p.Meter(), set, "", 0, p.Alive, settle(p))
	if err != nil {
		return load.Phase{}, nil, err
	}
	after, err := readBatches(ctx, p)
	if err != nil {
		return load.Phase{}, nil, err
	}
	checked, err := p.Check(ctx, set.Sample(b.cfg.Check))
	v.Checked.Uploads += checked.Uploads
	v.Checked.Objects += checked.Objects
	return ph, meanBatches(before, after), err
}
