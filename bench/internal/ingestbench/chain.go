package ingestbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/bench/internal/chainfloor"
	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/texttable"
)

// chainPrograms are the latency floor's programs, in start order and in
// the report's.
var chainPrograms = []string{pipeline.ChainRef, pipeline.ChainStore, pipeline.ChainFront}

// runsChain says whether the rounds run the latency floor: it is asked
// for, and the HTTP path has a phase at one client, the one it is held
// against.
func (c *Config) runsChain() bool { return c.LatencyFloor && slices.Contains(c.Clients, 1) }

// chainPhase runs round run's latency floor (for variant v's round: the
// floor is the same for every variant) on a pipeline of its own: a
// nats-server started as the round's others are and the chain floor's three
// programs against a fresh schema and bucket. Warmup unmeasured uploads,
// then Uploads from one client, each done at its 201; then the counts and a
// sample of Check uploads checked.
func (b *bench) chainPhase(ctx context.Context, v *Variant, run int) (_ Level, err error) {
	p, err := b.start(ctx, v, fmt.Sprintf("round%d-chain", run), chainPrograms...)
	if err != nil {
		return Level{}, err
	}
	defer func() { err = errors.Join(err, p.Stop()) }()
	cl := newClient(p.ChainURL, 1)
	defer cl.close()
	send := func(ctx context.Context, u upload) (string, int, error) {
		return cl.floorDone(ctx, "latency floor", http.StatusCreated, u.key, u.body, b.cfg.RequestTimeout)
	}
	if b.cfg.Warmup > 0 {
		if _, err := drive(ctx, makeUploads(b.keys("chain-warm-up"), b.cfg.Warmup, b.cfg.UploadSize), 1, send); err != nil {
			return Level{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	ups := makeUploads(b.keys("chain"), b.cfg.Uploads, b.cfg.UploadSize)
	l, recs, err := measurePhase(p, 1, func() ([]sent, error) { return drive(ctx, ups, 1, send) })
	if err != nil {
		return Level{}, err
	}
	if l.Checked, err = checkChain(ctx, p, ups, recs, b.cfg.Check, b.cfg.Warmup+b.cfg.Uploads); err != nil {
		return Level{}, err
	}
	l.Stages, err = stagesOf(ctx, p.NATSURL, chainEvents, recs)
	return l, err
}

// chainEvents are the latency floor's: its own stream.
var chainEvents = load.Events{Stream: chainfloor.StreamName, Subjects: func(id string) [3]string {
	return [3]string{chainfloor.RequestedPrefix + id, chainfloor.StoredPrefix + id, chainfloor.CompletedPrefix + id}
}}

// checkChain checks that the latency floor holds total uploads, each with
// its reference and both markers, and that n of ups (spread evenly) are in
// the bucket with the bytes sent.
func checkChain(ctx context.Context, p *pipeline.Pipeline, ups []upload, recs []sent, n, total int) (pipeline.Checked, error) {
	var uploads, refs, markers int
	err := p.Admin(ctx, func(c *pgx.Conn) error {
		table := func(name string) string { return pgx.Identifier{p.Schema, name}.Sanitize() }
		return c.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+table(chainfloor.Uploads)+"), (SELECT count(*) FROM "+
			table(chainfloor.Refs)+"), (SELECT count(*) FROM "+table(chainfloor.Markers)+")").Scan(&uploads, &refs, &markers)
	})
	if err != nil {
		return pipeline.Checked{}, fmt.Errorf("check: %w", err)
	}
	if uploads != total || refs != total || markers != 2*total {
		return pipeline.Checked{}, fmt.Errorf("check: %d uploads, %d references and %d markers, want %d, %d and %d",
			uploads, refs, markers, total, total, 2*total)
	}
	checked := sample(ups, recs, n)
	for _, e := range checked {
		data, err := os.ReadFile(filepath.Join(p.BlobDir, filepath.FromSlash(chainfloor.KeyPrefix+e.ID))) // #nosec G304 -- the floor's own bucket
		if err != nil {
			return pipeline.Checked{}, fmt.Errorf("check: object of %s: %w", e.ID, err)
		}
		if s := sha256Hex(data); s != e.SHA256 {
			return pipeline.Checked{}, fmt.Errorf("check: object of %s has sha256 %s, want %s (the bytes sent)", e.ID, s, e.SHA256)
		}
	}
	return pipeline.Checked{Uploads: len(checked), Objects: len(checked)}, nil
}

// chains are the rounds' latency floor phases.
func (v *Variant) chains() []Level { return v.phases(func(r Round) *Level { return r.Chain }) }

// chainCosted are the processes whose CPU the latency floor's is, in the
// report's order.
var chainCosted = append(slices.Clone(chainPrograms), pipeline.NATSServer, pipeline.Postgres)

// chainP50 is the median over v's rounds of the latency floor's p50; false
// without a latency floor phase.
func (v *Variant) chainP50() (time.Duration, bool) {
	ls := v.chains()
	if len(ls) == 0 {
		return 0, false
	}
	return time.Duration(summarize(ls, func(l Level) float64 { return float64(l.Latency[0]) }).Median), true
}

// oneClientAndFloor is the median over v's rounds of the 1-client p50,
// and the latency floor's; false without both.
func (r *Report) oneClientAndFloor(v *Variant) (p50, floor time.Duration, ok bool) {
	one := r.level(v, 1)
	floor, ok = v.chainP50()
	if len(one) == 0 || !ok || floor <= 0 {
		return 0, 0, false
	}
	return time.Duration(summarize(one, func(l Level) float64 { return float64(l.Latency[0]) }).Median), floor, true
}

// writeChain writes the latency floor's table: its rate, latencies and CPU
// per upload by process, beside the HTTP path's at one client.
func (r *Report) writeChain(w io.Writer, line func(string, ...any), v *Variant) {
	ls := v.chains()
	if len(ls) == 0 {
		return
	}
	line("Latency floor (chainfloor), 1 client, done at 201")
	checked := writeFloorPhase(w, ls, "uploads/s", chainCosted)
	line("checked after the phase: every upload's row, reference and two markers, and %d objects (sha256 of the bytes): all whole", checked)
	p50, floor, ok := r.oneClientAndFloor(v)
	if !ok {
		return
	}
	line("  1 client's p50 over the latency floor's: %.1f / %.1f ms = %.2f", ms(p50), ms(floor), float64(p50)/float64(floor))
	viaHTTP, viaFloor := staged(r.level(v, 1)), staged(ls)
	if len(viaHTTP) == 0 || len(viaFloor) == 0 {
		return
	}
	line("  legs at 1 client, ms (medians; the floor's programs in the services' places):")
	var lt texttable.Table
	lt.Row("   ", "HTTP path", "latency floor", "difference")
	for k, name := range legs {
		a := summarize(viaHTTP, func(l Level) float64 { return ms(l.Stages.Legs[k]) }).Median
		f := summarize(viaFloor, func(l Level) float64 { return ms(l.Stages.Legs[k]) }).Median
		lt.Row("    "+name, fmt.Sprintf("%.2f", a), fmt.Sprintf("%.2f", f), fmt.Sprintf("%+.2f", a-f))
	}
	lt.Write(w)
}

// writeChainLegend says what the latency floor does and leaves out.
func (r *Report) writeChainLegend(line func(string, ...any)) {
	c := r.Config
	line("Latency floor: the least a chain of three processes does, one after another, to take one upload from its request")
	line("to a 201 with the round trips of blobref's path (package chainfloor, bench/cmd/chainfloor), measured in each round")
	line("on a pipeline of its own (a nats-server started as the others are, a fresh schema and bucket), with the HTTP path's")
	line("1-client load: %d uploads from 1 client, each done at its 201, after %d unmeasured. Each program handles one", c.Uploads, c.Warmup)
	line("message at a time:")
	line("  chainfloor-front: reads the body; INSERT (id, body), one round trip and commit; publishes the request with its")
	line("    Nats-Msg-Id and awaits the ack; waits for the completed message on a core subscription; answers 201")
	line("  chainfloor-store: its pull consumer delivers the request; claims it and looks its marker up (an advisory lock and")
	line("    an EXISTS, one round trip); writes the object with IfNotExist and its sha256; commits the marker and gives the")
	line("    claim up (one round trip); publishes the stored message, awaits the ack, acks")
	line("  chainfloor-ref: its consumer delivers the stored message; reads the object's attributes; inserts the reference")
	line("    and its marker in one transaction (one round trip); publishes the completed message, awaits the ack, acks")
	line("It has no auth, JSON, CloudEvent, event checks, idempotency look-up, retry policy or dead letters, batching, metrics,")
	line("tracing, read model, outbox update or completer. Its p50 is what the machine's round trips and wake-ups between")
	line("processes cost one upload: a 1-client p50 target under it is OUT OF REACH on this machine")
}
