// Package blobstore is blobwriter's side effect: it streams an upload's bytes
// into the blob store under a deterministic key, verifying their SHA-256 on
// the way.
//
// The key is uploads/<id> (by default), written with IfNotExist: an object
// already there with the same fingerprint means the write is already done (a
// crash fell between the write and its marker); one with another
// fingerprint is a conflict, and nothing is overwritten.
package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"strings"
	"sync"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/blobref/blobref/internal/bucketdep"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// Bucket is the part of *blob.Bucket the writer uses.
type Bucket interface {
	bucketdep.Bucket // probed while down or missing
	NewWriter(ctx context.Context, key string, opts *blob.WriterOptions) (*blob.Writer, error)
}

// Claims opens claim-checked bytes by their dataref. If it also has a
// Delete(ctx, dataref) error method, the writer removes each claim check
// once its marker is recorded: the bytes are in the bucket, nothing needs
// the staged copy any more.
type Claims interface {
	Open(ctx context.Context, dataref string) (io.ReadCloser, error)
}

// claimDeleter is Claims that can remove a claim check.
type claimDeleter interface {
	Delete(ctx context.Context, dataref string) error
}

// DefaultStagingBucket is the Object Store bucket claim checks are staged
// in, as ingest's STAGING_BUCKET default.
const DefaultStagingBucket = "uploads-staging"

// Writer stores uploads in a bucket.
type Writer struct {
	Bucket    Bucket
	Claims    Claims // nil: claim-checked requests are retried until configured
	KeyPrefix string // events.DefaultKeyPrefix when empty
	// StagingBucket is the Object Store bucket claim checks must name
	// [DefaultStagingBucket]: a request's dataref must be
	// nats-object://<StagingBucket>/<its own id>, so that an event can only
	// bring the bytes staged for it.
	StagingBucket string
	// MaxClockSkew is how far in the future a request's time may lie
	// [events.DefaultMaxClockSkew]; a later one is refused as invalid.
	MaxClockSkew time.Duration
	// Now is the clock [time.Now].
	Now func() time.Time
}

// Key is the object key of upload id.
func (w *Writer) Key(id string) string {
	if w.KeyPrefix == "" {
		return events.DefaultKeyPrefix + id
	}
	return w.KeyPrefix + id
}

// DependencyBucket names the bucket in outages: the runner pauses while it
// is down and probes it with Probe.
const DependencyBucket = bucketdep.Name

// Step is the pipeline step: requested → blob stored → blob_stored.
func (w *Writer) Step() step.Step[events.Blob] {
	return step.Step[events.Blob]{
		Name:     events.BlobWriterConsumer.Step,
		Consumes: events.BlobWriterConsumer.Consumes,
		Durable:  events.BlobWriterConsumer.Durable,
		Effect:   w.Store,
		Emit: func(ev *events.Event, b events.Blob) (*events.Event, error) {
			return events.NewBlobStored(ev, b, events.SourceBlobWriter)
		},
		AfterRecord: w.DropClaim,
		Probes:      map[string]step.Probe{DependencyBucket: w.Probe},
	}
}

// DropClaim removes the claim check of request ev, whose blob step has
// recorded its marker: its own staged object only (see check), never one
// an event merely names. The step runner calls it after the marker, never
// before; its error leaves the object to the staging bucket's TTL.
func (w *Writer) DropClaim(ctx context.Context, ev *events.Event) error {
	d, ok := w.Claims.(claimDeleter)
	if ev.DataRef == "" || !ok || w.check(ev) != nil {
		return nil
	}
	return d.Delete(ctx, ev.DataRef)
}

// Probe reports whether the bucket answers: it exists, and reading the
// attributes of a key no upload has (upload ids never hold a dot) finds
// none.
func (w *Writer) Probe(ctx context.Context) error {
	return bucketdep.Probe(w.Bucket, w.Key(".probe"))(ctx)
}

// bucketErr attributes err to the bucket: an error that says it is down or
// full is an outage, not the upload's failure.
func bucketErr(err error) error { return bucketdep.Err(err) }

// Store writes the bytes of request ev to the bucket, unless they are there
// already, and describes the stored object. A request dated too far in the
// future, or whose dataref is not its own staged object, is refused as
// invalid before anything is read or written.
func (w *Writer) Store(ctx context.Context, ev *events.Event) (events.Blob, error) {
	if err := w.check(ev); err != nil {
		return events.Blob{}, err
	}
	key := w.Key(ev.ID)
	if ev.DataRef != "" {
		// Claim-checked bytes can be large: look for the object before
		// reading them again. Inline bytes are written at once, and the
		// IfNotExist write finds an object already there at Close.
		attrs, err := w.Bucket.Attributes(ctx, key)
		switch {
		case err == nil:
			return existing(key, attrs, ev)
		case gcerrors.Code(err) != gcerrors.NotFound:
			return events.Blob{}, bucketErr(fmt.Errorf("blob %s: %w", key, err))
		}
	}

	src, err := w.open(ctx, ev)
	if err != nil {
		return events.Blob{}, err
	}
	defer src.Close()

	// Cancelling wctx before Close aborts the write: nothing is stored.
	wctx, abort := context.WithCancel(ctx)
	defer abort()
	ct := storedContentType(ev.ContentType)
	bw, err := w.Bucket.NewWriter(wctx, key, &blob.WriterOptions{
		ContentType: ct,
		Metadata:    map[string]string{events.MetadataSHA256: ev.SHA256},
		IfNotExist:  true,
	})
	if err != nil {
		return events.Blob{}, bucketErr(fmt.Errorf("blob %s: %w", key, err))
	}
	h := sha256.New()
	in := &source{r: io.TeeReader(src, h), claimChecked: ev.DataRef != ""}
	n, err := copyBytes(bw, in)
	if err != nil {
		abort()
		_ = bw.Close()
		err = fmt.Errorf("blob %s: copy: %w", key, err)
		if in.err == nil {
			err = bucketErr(err) // the bucket refused the bytes
		}
		return events.Blob{}, err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != ev.SHA256 {
		abort()
		_ = bw.Close()
		return events.Blob{}, step.Permanent(events.ReasonDigestMismatch,
			fmt.Errorf("bytes of %s have sha256 %s, the event says %s", ev.ID, sum, ev.SHA256))
	}
	if err := bw.Close(); err != nil {
		if gcerrors.Code(err) == gcerrors.FailedPrecondition {
			// Another writer stored it first.
			attrs, aerr := w.Bucket.Attributes(ctx, key)
			if aerr != nil {
				return events.Blob{}, bucketErr(fmt.Errorf("blob %s: %w", key, aerr))
			}
			return existing(key, attrs, ev)
		}
		return events.Blob{}, bucketErr(fmt.Errorf("blob %s: %w", key, err))
	}
	return events.Blob{Key: key, Size: n, SHA256: ev.SHA256, ContentType: ct}, nil
}

// source reads the bytes to store and keeps the error reading them failed
// with: a copy that fails without one failed in the bucket. Claim-checked
// bytes come from JetStream.
type source struct {
	r            io.Reader
	claimChecked bool
	err          error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		if s.claimChecked {
			err = step.Dependency(step.DependencyJetStream, err)
		}
		s.err = err
	}
	return n, err
}

// copyBuffers holds the buffers bytes are copied through.
var copyBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// copyBytes copies src to dst through a pooled buffer. blob.Writer's own
// ReadFrom, which io.Copy would call, allocates a fresh 1 MiB buffer for
// every object: for small uploads, clearing and collecting it cost more
// than writing the object.
func copyBytes(dst io.Writer, src io.Reader) (int64, error) {
	buf := copyBuffers.Get().(*[32 << 10]byte)
	defer copyBuffers.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{dst}, src, buf[:])
}

// storedContentType is media type ct as the bucket keeps it: gocloud.dev
// reformats it with mime.FormatMediaType (lower-case type and parameter names,
// "; " between parameters). Reporting it in that form makes a write and a
// resumed step (which reads it back from the object) record the same result.
func storedContentType(ct string) string {
	t, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	if f := mime.FormatMediaType(t, params); f != "" {
		return f
	}
	return ct
}

// existing turns an object already at key into the step's result, or into a
// conflict when it holds other bytes.
func existing(key string, attrs *blob.Attributes, ev *events.Event) (events.Blob, error) {
	if got := attrs.Metadata[events.MetadataSHA256]; got != ev.SHA256 {
		return events.Blob{}, step.Conflict("object %s exists with sha256 %q, upload %s has %s", key, got, ev.ID, ev.SHA256)
	}
	return events.Blob{Key: key, Size: attrs.Size, SHA256: ev.SHA256, ContentType: attrs.ContentType}, nil
}

// check refuses a request the step must not run: one dated more than
// MaxClockSkew ahead, or one whose dataref is not
// nats-object://<StagingBucket>/<id>.
func (w *Writer) check(ev *events.Event) error {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	if err := ev.CheckTime(now(), w.MaxClockSkew); err != nil {
		return err
	}
	if ev.DataRef == "" {
		return nil
	}
	staging := w.StagingBucket
	if staging == "" {
		staging = DefaultStagingBucket
	}
	bucket, name, err := events.ParseObjectRef(ev.DataRef)
	switch {
	case err != nil:
		return step.Permanent(events.ReasonInvalid, err)
	case bucket != staging:
		return step.Permanent(events.ReasonInvalid,
			fmt.Errorf("dataref of upload %s names bucket %q, not the staging bucket %q", ev.ID, bucket, staging))
	case name != ev.ID:
		return step.Permanent(events.ReasonInvalid,
			fmt.Errorf("dataref of upload %s names object %q, not the upload's own", ev.ID, clip(name)))
	}
	return nil
}

// clip shortens untrusted text quoted in an error.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "..."
}

func (w *Writer) open(ctx context.Context, ev *events.Event) (io.ReadCloser, error) {
	if ev.DataRef == "" {
		return io.NopCloser(bytes.NewReader(ev.Data)), nil
	}
	if w.Claims == nil {
		return nil, fmt.Errorf("upload %s is claim-checked (%s) and no claim store is configured", ev.ID, ev.DataRef)
	}
	r, err := w.Claims.Open(ctx, ev.DataRef)
	return r, step.Dependency(step.DependencyJetStream, err)
}
