package ingestbench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
)

// MemoryRun is one upload of the memory phase: Size bytes streamed over
// HTTP from a generator, and each program's memory while it passed.
type MemoryRun struct {
	Size int64
	// Accepted runs from the request to the 202 answer (ingest has staged
	// the bytes); Completed to the completed event.
	Accepted, Completed time.Duration
	// Before is each program's RSS when the upload started, Peak its peak
	// RSS (VmHWM, reset at the start) until the upload completed, by name.
	Before, Peak map[string]int64
}

// generated is a reader of n pseudo-random bytes that holds 32 bytes of
// state and hashes what it hands out: the benchmark never holds an upload
// in memory either.
type generated struct {
	r    io.Reader
	hash interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func generate(seed byte, n int64) *generated {
	g := &generated{hash: sha256.New()}
	g.r = io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{0xbe, seed}), n), g.hash)
	return g
}

func (g *generated) Read(p []byte) (int, error) { return g.r.Read(p) }

// sha256 is the hex SHA-256 of the bytes read so far.
func (g *generated) sha256() string { return hex.EncodeToString(g.hash.Sum(nil)) }

// memoryPhase runs the memory phase of variant v on a pipeline of its
// own: an unmeasured warm-up upload of SmallSize, then one of SmallSize and
// one of LargeSize. The pipeline's directory is removed afterwards (a few
// large files) unless Keep.
func (b *bench) memoryPhase(ctx context.Context, v *Variant) (err error) {
	p, err := b.start(ctx, v, "memory", deployed...)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p.BlobDir)
	defer func() {
		err = errors.Join(err, p.Stop())
		if !b.cfg.Keep {
			err = errors.Join(err, os.RemoveAll(dir))
		}
	}()
	nc, err := nats.Connect(p.NATSURL, nats.Name("bench-tracker"))
	if err != nil {
		return fmt.Errorf("ingestbench: %w", err)
	}
	defer nc.Close()
	tracker, err := load.Track(nc)
	if err != nil {
		return err
	}
	defer tracker.Close()
	cl := newClient(p.IngestURL, 1)
	defer cl.close()
	keys := b.keys("memory")
	b.progress("%s: memory, a warm-up upload of %s", v.Name, formatBytes(b.cfg.SmallSize))
	if _, err := memory(ctx, p, cl, tracker, keys+"warm-up", b.cfg.SmallSize); err != nil {
		return err
	}
	for i, size := range []int64{b.cfg.SmallSize, b.cfg.LargeSize} {
		b.progress("%s: memory, one upload of %s", v.Name, formatBytes(size))
		m, err := memory(ctx, p, cl, tracker, fmt.Sprintf("%s%d", keys, i), size)
		if err != nil {
			return err
		}
		v.Memory = append(v.Memory, m)
	}
	return nil
}

// memory uploads size bytes and reports the programs' peak RSS while the
// upload passed through them. It checks that the bytes arrived whole: the
// completed event carries their SHA-256 and the object has their size.
func memory(ctx context.Context, p *pipeline.Pipeline, cl *client, tracker *load.Tracker, key string, size int64) (MemoryRun, error) {
	res := MemoryRun{Size: size}
	if err := resetPeaks(p); err != nil {
		return res, err
	}
	before, err := readMemory(p)
	if err != nil {
		return res, err
	}
	res.Before = map[string]int64{}
	for name, m := range before {
		res.Before[name] = m.RSS
	}

	body := generate(byte(len(key)), size) // #nosec G115 -- only seeds test data: truncation is fine
	start := time.Now()
	a, err := cl.post(ctx, key, body, size, 0)
	if err != nil {
		return res, err
	}
	if a.id == "" {
		return res, fmt.Errorf("upload %s: got %d, want 202", key, a.status)
	}
	res.Accepted = time.Since(start)
	done, err := tracker.Wait(ctx, []string{a.id}, p.Alive, 0)
	if err != nil {
		return res, err
	}
	res.Completed = done[a.id].At.Sub(start)
	if res.Peak, err = peaks(p); err != nil {
		return res, err
	}
	want := pipeline.Expected{ID: a.id, Subject: subjectOf(key), ContentType: contentType, Size: size, SHA256: body.sha256()}
	if got := done[a.id].SHA256; got != want.SHA256 {
		return res, fmt.Errorf("upload %s: completed with sha256 %s, want %s (the bytes sent)", key, got, want.SHA256)
	}
	if _, err := p.Check(ctx, []pipeline.Expected{want}); err != nil {
		return res, err
	}
	return res, nil
}

// resetPeaks resets the peak RSS of every program of p.
func resetPeaks(p *pipeline.Pipeline) error {
	for _, pr := range p.Processes() {
		if err := procstat.ResetPeak(pr.PID()); err != nil {
			return fmt.Errorf("%s: %w", pr.Name, err)
		}
	}
	return nil
}

// readMemory reads every program's memory, by name.
func readMemory(p *pipeline.Pipeline) (map[string]procstat.Memory, error) {
	out := map[string]procstat.Memory{}
	for _, pr := range p.Processes() {
		m, err := procstat.ReadMemory(pr.PID())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pr.Name, errors.Join(err, pr.Alive()))
		}
		out[pr.Name] = m
	}
	return out, nil
}

// peaks returns every program's peak RSS since resetPeaks, by name.
func peaks(p *pipeline.Pipeline) (map[string]int64, error) {
	mem, err := readMemory(p)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(mem))
	for name, m := range mem {
		out[name] = m.Peak
	}
	return out, nil
}
