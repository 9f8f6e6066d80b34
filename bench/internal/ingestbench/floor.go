package ingestbench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/bench/internal/acceptfloor"
	"github.com/blobref/blobref/bench/internal/pipeline"
)

// floorPhase runs round run's HTTP accept floor (for variant v's round:
// the floor itself is the same for every variant) on a pipeline of its
// own, a nats-server started as the round's others are and httpfloor
// against a fresh schema: Warmup unmeasured uploads, then Uploads from
// FloorClients() clients sending what accept only sends, each done at its
// 202; then the counts and a sample of Check uploads checked.
func (b *bench) floorPhase(ctx context.Context, v *Variant, run int) (_ Level, err error) {
	p, err := b.start(ctx, v, fmt.Sprintf("round%d-floor", run), pipeline.HTTPFloor)
	if err != nil {
		return Level{}, err
	}
	defer func() { err = errors.Join(err, p.Stop()) }()
	clients := b.cfg.FloorClients()
	cl := newClient(p.FloorURL, clients)
	defer cl.close()
	send := func(ctx context.Context, u upload) (string, int, error) {
		return cl.floorDone(ctx, "accept floor", http.StatusAccepted, u.key, u.body, b.cfg.RequestTimeout)
	}
	if b.cfg.Warmup > 0 {
		if _, err := drive(ctx, makeUploads(b.keys("floor-warm-up"), b.cfg.Warmup, b.cfg.UploadSize), min(16, b.cfg.Warmup), send); err != nil {
			return Level{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	ups := makeUploads(b.keys("floor"), b.cfg.Uploads, b.cfg.UploadSize)
	l, recs, err := measurePhase(p, clients, func() ([]sent, error) { return drive(ctx, ups, clients, send) })
	if err != nil {
		return Level{}, err
	}
	l.Checked, err = checkFloor(ctx, p, ups, recs, b.cfg.Check, b.cfg.Warmup+b.cfg.Uploads)
	return l, err
}

// checkFloor checks that the floor holds total uploads, in its table and
// in its stream, and that n of ups (spread evenly) are there with the
// bytes sent: the row's body and the message's data.
func checkFloor(ctx context.Context, p *pipeline.Pipeline, ups []upload, recs []sent, n, total int) (pipeline.Checked, error) {
	want := map[string]string{} // sha256 by id
	for _, e := range sample(ups, recs, n) {
		want[e.ID] = e.SHA256
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	var rows int
	got := map[string]string{}
	err := p.Admin(ctx, func(c *pgx.Conn) error {
		table := pgx.Identifier{p.Schema, acceptfloor.Table}.Sanitize()
		if err := c.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&rows); err != nil {
			return err
		}
		r, err := c.Query(ctx, "SELECT id, encode(sha256(body), 'hex') FROM "+table+" WHERE id = ANY($1)", ids)
		if err != nil {
			return err
		}
		var id, sha string
		_, err = pgx.ForEachRow(r, []any{&id, &sha}, func() error {
			got[id] = sha
			return nil
		})
		return err
	})
	if err != nil {
		return pipeline.Checked{}, fmt.Errorf("check: %w", err)
	}
	if rows != total {
		return pipeline.Checked{}, fmt.Errorf("check: %d rows in %s, want %d", rows, acceptfloor.Table, total)
	}
	for id, sha := range want {
		if got[id] != sha {
			return pipeline.Checked{}, fmt.Errorf("check: row %s has a body with sha256 %q, want %s (the bytes sent)", id, got[id], sha)
		}
	}

	nc, err := nats.Connect(p.NATSURL, nats.Name("bench-check"))
	if err != nil {
		return pipeline.Checked{}, fmt.Errorf("check: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return pipeline.Checked{}, fmt.Errorf("check: %w", err)
	}
	stream, err := js.Stream(ctx, acceptfloor.StreamName)
	if err != nil {
		return pipeline.Checked{}, fmt.Errorf("check: %w", err)
	}
	if msgs := stream.CachedInfo().State.Msgs; msgs != uint64(total) { // #nosec G115 -- a count of uploads
		return pipeline.Checked{}, fmt.Errorf("check: %d messages in %s, want %d", msgs, acceptfloor.StreamName, total)
	}
	for id, sha := range want {
		m, err := stream.GetLastMsgForSubject(ctx, acceptfloor.SubjectPrefix+id)
		if err != nil {
			return pipeline.Checked{}, fmt.Errorf("check: message of %s: %w", id, err)
		}
		if s := sha256Hex(m.Data); s != sha {
			return pipeline.Checked{}, fmt.Errorf("check: message of %s has sha256 %s, want %s (the bytes sent)", id, s, sha)
		}
	}
	return pipeline.Checked{Uploads: len(want), Objects: len(want)}, nil
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
