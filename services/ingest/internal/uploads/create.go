package uploads

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"slices"
	"time"
)

// readHead reads the body up to one byte past the inline threshold: all of
// an inline body. With a Content-Length it reads into a buffer of that size
// (and the one byte that finds the end).
func (s *Service) readHead(sub Submission) ([]byte, error) {
	limit := s.InlineThreshold + 1
	n := min(limit, 32<<10)
	if sub.Size >= 0 {
		n = int(min(sub.Size+1, int64(limit)))
	}
	buf := make([]byte, 0, n)
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(2*cap(buf), limit)-len(buf))
		}
		m, err := sub.Body.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &BodyError{Err: err}
		}
	}
	return buf, nil
}

// submitInline runs a request whose body travels inline: record and
// publish in a batch.
func (s *Service) submitInline(ctx context.Context, id string, sub Submission, body []byte) (Result, error) {
	if len(body) == 0 {
		return Result{}, ErrEmptyBody
	}
	sum := sha256.Sum256(body)
	fp := fingerprint{size: int64(len(body)), sha256: hex.EncodeToString(sum[:])}
	rec := s.newRecord(id, sub)
	rec.Size, rec.SHA256 = fp.size, fp.sha256
	return s.recordNew(ctx, &job{ctx: context.WithoutCancel(ctx), rec: rec, inline: body, insert: true}, sub, fp)
}

// submitStaged runs a request whose body is too large to travel inline:
// unless the key is recorded, lease it, stream the body into the staging
// bucket, then record and publish in a batch.
func (s *Service) submitStaged(ctx context.Context, id string, sub Submission, head []byte) (Result, error) {
	body := io.MultiReader(bytes.NewReader(head), sub.Body)
	holder := newHolder()
	snap, found, leased, err := s.takeLease(ctx, id, holder)
	switch {
	case err != nil:
		return Result{}, err
	case found:
		if snap.busy {
			return Result{}, ErrBusy
		}
		fp, err := hashBody(body)
		if err != nil {
			return Result{}, err
		}
		st, err := s.resume(ctx, snap, sub, fp, nil)
		return Result{State: st}, err
	case !leased:
		return Result{}, ErrBusy
	}
	rec := s.newRecord(id, sub)
	if err := s.stage(ctx, &rec, holder, body); err != nil {
		s.releaseLease(ctx, id, holder)
		return Result{}, err
	}
	j := &job{ctx: context.WithoutCancel(ctx), rec: rec, insert: true, holder: holder}
	res, err := s.recordNew(ctx, j, sub, fingerprint{size: rec.Size, sha256: rec.SHA256})
	if !j.won {
		s.releaseLease(ctx, id, holder) // unless the insert deleted it
	}
	return res, err
}

func (s *Service) newRecord(id string, sub Submission) record {
	return record{
		ID: id, Caller: sub.Caller, Key: sub.Key, Subject: sub.Subject, ContentType: sub.ContentType,
		CreatedAt: s.now(),
	}
}

// stage streams body into the staging bucket under the lease of holder, and
// completes rec with what it staged.
func (s *Service) stage(ctx context.Context, rec *record, holder string, body io.Reader) error {
	lctx, stop, lost := s.holdLease(ctx, rec.ID, holder)
	st, err := stageBody(lctx, s.Staging, rec.ID, body, s.Metrics)
	stop()
	if reason := lost(); reason != nil {
		return reason
	}
	if err != nil {
		return err
	}
	s.Metrics.staged(st)
	rec.Size, rec.SHA256, rec.DataRef = st.Size, st.SHA256, st.DataRef
	return inject(ctx, "after-stage")
}

// recordNew runs the batch job of a new upload, and answers for it: pending
// when it recorded the upload, the upload resumed when another request had.
func (s *Service) recordNew(ctx context.Context, j *job, sub Submission, fp fingerprint) (Result, error) {
	s.batches.do(j)
	switch {
	case j.err != nil:
		return Result{}, j.err
	case j.won:
		return Result{Created: true, State: pendingState(j.rec, j.at)}, nil
	case j.snap == nil:
		return Result{}, ErrBusy
	}
	st, err := s.resume(ctx, *j.snap, sub, fp, j.inline)
	return Result{State: st}, err
}

// pendingState is the state of an upload just published.
func pendingState(rec record, at time.Time) State {
	return State{
		ID: rec.ID, Subject: rec.Subject, State: StatePending,
		ContentType: rec.ContentType, Size: rec.Size, SHA256: rec.SHA256, CreatedAt: rec.CreatedAt,
		Steps: Steps{Accepted: &Step{At: at}},
	}
}
