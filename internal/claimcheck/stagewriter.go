package claimcheck

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A staged body is an ordinary Object Store object (the layout in
// layout.go), so that ObjectClaims reads it as any claim check. The writer
// writes the chunks itself rather than through ObjectStore.Put, for two
// things Put cannot do:
//
//   - Resume. The object's nuid is fixed by its name (stagedNUID), and each
//     chunk carries its number, the offset where it ends and the SHA-256 of
//     the body up to there. An attempt cut short keeps its chunks; the
//     retry reads that many bytes of its body, checks their digest against
//     the last chunk's, and stages only the rest.
//   - Pace. Each chunk is published on its own and acknowledged before the
//     next; one JetStream refuses for the moment is retried with back-off
//     instead of failing the request. A retry of a chunk whose
//     acknowledgement was lost is no second copy: each chunk carries a
//     Nats-Msg-Id of its writer's session and number, which JetStream
//     deduplicates.
//   - Fence. One writer at a time: a stale ingest whose lease lapsed must
//     not interleave its chunks with the request that took the key over.
//     Each writer session first claims the object on its fence subject
//     (fenceSubject), expecting the fence's last sequence it read, so that
//     of two sessions one wins; each of its publishes then expects that
//     claim to be the fence's last message (Nats-Expected-Last-Subject-
//     Sequence-Subject), and fails once another session claimed it. The
//     check is on the fence's one small message, not on the chunk subject,
//     whose last message nats-server would load for every chunk. The fence
//     stays until the bucket's TTL (purge removes it with the chunks);
//     readers never see it, it is no object's chunk subject.
//
// The info message is written last: until then GetInfo finds no object,
// and nothing refers to the chunks. ingest may not purge the bucket (NATS
// permissions): chunks it must drop are rolled up instead. The first chunk
// of a fresh attempt carries Nats-Rollup: sub, which removes whatever the
// subject held (an earlier attempt's chunks of other bytes), and a
// dropped attempt leaves one empty rolled-up message (a tombstone).
const (
	hdrStagedChunk = "Blobref-Staged-Chunk"   // the chunk's number, from 1
	hdrStagedEnd   = "Blobref-Staged-End"     // the body offset where the chunk ends
	hdrStagedSum   = "Blobref-Staged-Sha256"  // hex SHA-256 of the body up to End
	hdrStagedDrop  = "Blobref-Staged-Dropped" // on the tombstone of dropped chunks
	hdrStagedClaim = "Blobref-Staged-Claim"   // on a fence claim: its session's token
	// hdrExpectSubject names the subject whose last sequence
	// Nats-Expected-Last-Subject-Sequence is checked against (nats-server
	// 2.11 and later); nats.go has no publish option for it.
	hdrExpectSubject = "Nats-Expected-Last-Subject-Sequence-Subject"
)

// Staging's retry defaults, and the back-off between retries of a chunk.
const (
	defaultStageRetryFor   = 30 * time.Second
	defaultStagePubTimeout = 5 * time.Second
	stageRetryBase         = 50 * time.Millisecond
	stageRetryMax          = 2 * time.Second
)

// stagedNUID is the nuid of the staged object named name: the same for
// every attempt, so that a retry finds the chunks an earlier one left.
func stagedNUID(name string) string { return "staged-" + name }

// chunkMark is where staging stands: the last chunk stored.
type chunkMark struct {
	chunk uint32 // its number; 0: none
	end   int64  // the body offset where it ends
	sum   string // hex SHA-256 of the body up to end
	seq   uint64 // its stream sequence
}

// stageWriter writes one body into the staging bucket as chunks.
type stageWriter struct {
	s      *Staging
	stream jetstream.Stream
	name   string
	hooks  Hooks

	subject string    // the chunks' subject
	fence   string    // the object's fence subject
	claim   uint64    // the sequence of this session's claim on the fence
	h       hash.Hash // SHA-256 of the body read so far
	last    chunkMark
}

// write stages body: resumes what an earlier attempt staged, writes the
// rest chunk by chunk, then the object's info.
func (w *stageWriter) write(ctx context.Context, body io.Reader) (Staged, error) {
	w.subject = chunkSubject(w.s.Bucket, stagedNUID(w.name))
	w.fence = fenceSubject(w.s.Bucket, w.name)
	w.h = sha256.New()
	if err := w.claimFence(ctx); err != nil {
		return Staged{}, err
	}
	resumed, err := w.resume(ctx, body)
	if err != nil {
		return Staged{}, err
	}
	buf := make([]byte, stageChunkSize)
	written := 0
	for {
		n, rerr := io.ReadFull(body, buf)
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return Staged{}, &BodyError{Err: rerr} // what is staged stays, for the retry
		}
		if n > 0 {
			w.h.Write(buf[:n])
			if err := w.put(ctx, buf[:n]); err != nil {
				return Staged{}, err
			}
			if written++; written == 2 && rerr == nil {
				// Two chunks staged and more to come: a failure here is
				// one a retry resumes from.
				if err := w.hooks.MidStage(ctx); err != nil {
					return Staged{}, err
				}
			}
		}
		if rerr != nil {
			break
		}
	}
	if err := w.finish(ctx); err != nil {
		return Staged{}, err
	}
	return Staged{Size: w.last.end, SHA256: hex.EncodeToString(w.h.Sum(nil)), DataRef: w.s.DataRef(w.name), Resumed: resumed}, nil
}

// resume continues what an earlier attempt staged: it reads as many bytes
// of body as that attempt staged and returns their count if their digest
// is the one recorded. Chunks of other bytes are removed, and the caller
// gets ErrStale (that much of the body is consumed).
func (w *stageWriter) resume(ctx context.Context, body io.Reader) (int64, error) {
	mark, err := w.lastChunk(ctx)
	if err != nil {
		return 0, w.unavailable(err)
	}
	if mark.chunk == 0 {
		w.last = chunkMark{} // the first chunk rolls up what is there
		return 0, nil
	}
	n, err := io.CopyN(w.h, body, mark.end)
	if err != nil && err != io.EOF {
		return 0, &BodyError{Err: err}
	}
	if n == mark.end && hex.EncodeToString(w.h.Sum(nil)) == mark.sum {
		w.last = mark
		return n, nil
	}
	if err := w.drop(ctx); err != nil {
		return 0, w.unavailable(err)
	}
	return 0, ErrStale
}

// lastChunk returns the last chunk staged for the object if its chunks
// are whole (as many on the subject as the last one's number says); its
// number is 0 if not.
func (w *stageWriter) lastChunk(ctx context.Context) (chunkMark, error) {
	msg, err := w.stream.GetLastMsgForSubject(ctx, w.subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return chunkMark{}, nil
	}
	if err != nil {
		return chunkMark{}, err
	}
	mark, ok := parseChunkMark(msg)
	if !ok {
		return chunkMark{}, nil
	}
	info, err := w.stream.Info(ctx, jetstream.WithSubjectFilter(w.subject))
	if err != nil {
		return chunkMark{}, err
	}
	if info.State.Subjects[w.subject] != uint64(mark.chunk) {
		return chunkMark{}, nil
	}
	return mark, nil
}

func parseChunkMark(msg *jetstream.RawStreamMsg) (chunkMark, bool) {
	chunk, err1 := strconv.ParseUint(msg.Header.Get(hdrStagedChunk), 10, 32)
	end, err2 := strconv.ParseInt(msg.Header.Get(hdrStagedEnd), 10, 64)
	sum := msg.Header.Get(hdrStagedSum)
	if err1 != nil || err2 != nil || chunk == 0 || end <= 0 || len(sum) != 2*sha256.Size {
		return chunkMark{}, false
	}
	return chunkMark{chunk: uint32(chunk), end: end, sum: sum, seq: msg.Sequence}, true
}

// put stages the next chunk, data, whose bytes w.h has already hashed.
func (w *stageWriter) put(ctx context.Context, data []byte) error {
	next := chunkMark{chunk: w.last.chunk + 1, end: w.last.end + int64(len(data)), sum: hex.EncodeToString(w.h.Sum(nil))}
	msg := nats.NewMsg(w.subject)
	msg.Data = data
	msg.Header.Set(hdrStagedChunk, strconv.FormatUint(uint64(next.chunk), 10))
	msg.Header.Set(hdrStagedEnd, strconv.FormatInt(next.end, 10))
	msg.Header.Set(hdrStagedSum, next.sum)
	if next.chunk == 1 {
		msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	// After a publish whose acknowledgement was lost, the chunk may be
	// stored already: JetStream answers its retry, of the same id, with
	// the stored one's sequence.
	msg.Header.Set(jetstream.MsgIDHeader, w.fence+"/"+strconv.FormatUint(w.claim, 10)+"/"+strconv.FormatUint(uint64(next.chunk), 10))
	seq, err := w.publish(ctx, msg, w.fenced(), nil)
	if err != nil {
		return err
	}
	next.seq = seq
	w.last = next
	w.hooks.Wrote(len(data))
	return nil
}

// finish writes the object's info: from then on it is an object.
func (w *stageWriter) finish(ctx context.Context) error {
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: w.name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: stageChunkSize}},
		Bucket:     w.s.Bucket,
		NUID:       stagedNUID(w.name),
		Size:       uint64(w.last.end), // #nosec G115 -- a byte offset, never negative
		ModTime:    time.Now().UTC(),
		Chunks:     w.last.chunk,
		Digest:     jetstream.GetObjectDigestValue(w.h),
	}
	data, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("staging %s: encode info: %w", w.name, err)
	}
	msg := nats.NewMsg(MetaSubject(w.s.Bucket, w.name))
	msg.Data = data
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	_, err = w.publish(ctx, msg, w.fenced(), nil)
	return err
}

// claimFence claims the object for this session: it publishes a claim on
// the fence subject that expects the fence's last message to be the one
// it read, and rolls that up. Of two sessions that read the same fence one
// wins; the other gets ErrTakenOver. A claim stored though its
// acknowledgement was lost is recognised by its token.
func (w *stageWriter) claimFence(ctx context.Context) error {
	last, err := w.stream.GetLastMsgForSubject(ctx, w.fence)
	var seen uint64
	switch {
	case err == nil:
		seen = last.Sequence
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return w.unavailable(err)
	}
	token := crand.Text()
	msg := nats.NewMsg(w.fence)
	msg.Header.Set(hdrStagedClaim, token)
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	stored := func(ctx context.Context) (uint64, bool) {
		m, err := w.stream.GetLastMsgForSubject(ctx, w.fence)
		if err != nil || m.Header.Get(hdrStagedClaim) != token {
			return 0, false
		}
		return m.Sequence, true
	}
	w.claim, err = w.publish(ctx, msg, &expectation{seq: seen}, stored)
	return err
}

// expectation is what a publish expects: that the last message on subject
// (its own if empty) is at sequence seq.
type expectation struct {
	seq     uint64
	subject string
}

// fenced is the expectation of every publish of the session but its
// claim: the claim is still the fence's last message.
func (w *stageWriter) fenced() *expectation {
	return &expectation{seq: w.claim, subject: w.fence}
}

// publish publishes msg (if expect is set, after the message of sequence
// expect.seq on expect.subject, or on its own subject) and returns its
// sequence. It retries what
// JetStream refuses for the moment, with back-off, for RetryFor at most.
// A full store is a *StoreFullError, and the chunks staged so far are
// removed: nothing is left half-way. stored, if set, says whether a
// publish refused for its expected sequence had in fact been stored. A
// publish the fence refuses is ErrTakenOver: another session claimed the
// object.
func (w *stageWriter) publish(ctx context.Context, msg *nats.Msg, expect *expectation, stored func(context.Context) (uint64, bool)) (uint64, error) {
	retryFor, timeout := w.s.RetryFor, w.s.PublishTimeout
	if retryFor <= 0 {
		retryFor = defaultStageRetryFor
	}
	if timeout <= 0 {
		timeout = defaultStagePubTimeout
	}
	deadline := time.Now().Add(retryFor)
	delay := stageRetryBase
	for {
		var opts []jetstream.PublishOpt
		if expect != nil {
			opts = append(opts, jetstream.WithExpectLastSequencePerSubject(expect.seq))
			if expect.subject != "" {
				msg.Header.Set(hdrExpectSubject, expect.subject)
			}
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		ack, err := w.s.JS.PublishMsg(pctx, msg, opts...)
		cancel()
		switch refusal(err) {
		case refusedNot:
			return ack.Sequence, nil
		case refusedFull:
			w.purge(ctx)
			return 0, &StoreFullError{Err: err}
		case refusedSequence:
			if stored != nil {
				if seq, ok := stored(ctx); ok {
					return seq, nil
				}
			}
			if expect != nil && expect.subject == w.fence {
				return 0, fmt.Errorf("staging %s: %w (%w)", w.name, ErrTakenOver, err)
			}
			return 0, w.unavailable(err)
		case refusedForGood:
			return 0, w.unavailable(err)
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return 0, w.unavailable(err)
		}
		w.hooks.Retried()
		sleepCtx(ctx, delay/2+rand.N(delay/2+1)) // #nosec G404 -- jitter of a retry delay, not a secret
		delay = min(2*delay, stageRetryMax)
	}
}

// drop removes the chunks staged so far by rolling them up into an empty
// tombstone.
func (w *stageWriter) drop(ctx context.Context) error {
	msg := nats.NewMsg(w.subject)
	msg.Header.Set(hdrStagedDrop, "true")
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	_, err := w.publish(ctx, msg, w.fenced(), nil)
	return err
}

// purge gives the space of the chunks staged so far back to a full store,
// where a tombstone cannot be written: it purges them and the fence, which
// a deployment may forbid ingest (deploy/nats/nats.conf does). The chunks
// then stay for the client's retry to resume, or until the bucket's TTL.
func (w *stageWriter) purge(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), purgeTimeout)
	defer cancel()
	if err := w.stream.Purge(ctx, jetstream.WithPurgeSubject(w.subject)); err != nil {
		return // the fence's purge is refused alike
	}
	_ = w.stream.Purge(ctx, jetstream.WithPurgeSubject(w.fence))
}

// purgeTimeout bounds a purge, which NATS permissions may refuse without
// an answer.
const purgeTimeout = 2 * time.Second

func (w *stageWriter) unavailable(err error) error {
	w.s.forget()
	return unavailable(err)
}
