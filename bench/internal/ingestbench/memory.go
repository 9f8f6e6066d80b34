package ingestbench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"
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

// memory uploads size bytes and reports the programs' peak RSS while the
// upload passed through them. It checks that the bytes arrived whole: the
// completed event carries their SHA-256 and the object has their size.
func (b *bench) memory(ctx context.Context, key string, size int64) (MemoryRun, error) {
	res := MemoryRun{Size: size}
	if err := b.resetPeaks(); err != nil {
		return res, err
	}
	before, err := b.readMemory()
	if err != nil {
		return res, err
	}
	res.Before = map[string]int64{}
	for name, m := range before {
		res.Before[name] = m.RSS
	}

	body := generate(byte(len(key)), size)
	start := time.Now()
	id, err := b.client.post(ctx, b.keyPrefix+key, body, size)
	if err != nil {
		return res, err
	}
	res.Accepted = time.Since(start)
	done, err := b.tracker.wait(ctx, []string{id}, b.pipe.Alive)
	if err != nil {
		return res, err
	}
	res.Completed = done[id].At.Sub(start)
	if res.Peak, err = b.peaks(); err != nil {
		return res, err
	}

	if got, want := done[id].SHA256, body.sha256(); got != want {
		return res, fmt.Errorf("upload %s: completed with sha256 %s, want %s (the bytes sent)", key, got, want)
	}
	fi, err := os.Stat(b.pipe.BlobPath(id))
	if err != nil {
		return res, fmt.Errorf("upload %s: %w", key, err)
	}
	if fi.Size() != size {
		return res, fmt.Errorf("upload %s: object has %d bytes, want %d", key, fi.Size(), size)
	}
	return res, nil
}
