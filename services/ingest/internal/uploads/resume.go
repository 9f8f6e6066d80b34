package uploads

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
)

// fingerprint is what a retry's body must match.
type fingerprint struct {
	size   int64
	sha256 string
}

// resume runs a retry: the body must be the one first sent with the key;
// the request is published again if it never was, or has been pending long
// enough. inline holds the bytes of an inline upload.
func (s *Service) resume(ctx context.Context, snap snapshot, sub Submission, fp fingerprint, inline []byte) (State, error) {
	if snap.busy {
		return State{}, ErrBusy
	}
	var differs []string
	if fp.size != snap.Size || fp.sha256 != snap.SHA256 {
		differs = append(differs, "body")
	}
	if sub.Subject != snap.Subject {
		differs = append(differs, "subject")
	}
	if sub.ContentType != snap.ContentType {
		differs = append(differs, "content type")
	}
	if differs != nil {
		return State{}, &MismatchError{ID: snap.ID, Fields: differs}
	}

	if !snap.completed() && (snap.PublishedAt == nil || s.now().Sub(*snap.PublishedAt) >= s.RedriveAfter) {
		j := &job{ctx: context.WithoutCancel(ctx), rec: snap.record, inline: inline}
		s.batches.do(j)
		if j.err != nil {
			return State{}, j.err
		}
		seq := int64(j.seq) // #nosec G115 -- a JetStream stream sequence, below 2^63
		snap.PublishedAt, snap.PublishedSeq = &j.at, &seq
		snap.PublishCount++
	}
	return s.catchUp(ctx, snap.state()), nil
}

// hashBody reads body to its end and returns its fingerprint.
func hashBody(body io.Reader) (fingerprint, error) {
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return fingerprint{}, &BodyError{Err: err}
	}
	return fingerprint{size: n, sha256: hex.EncodeToString(h.Sum(nil))}, nil
}
