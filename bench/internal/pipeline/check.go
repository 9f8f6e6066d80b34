package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/blobref/blobref/pkg/events"
)

// Expected is what the pipeline should have made of one upload.
type Expected struct {
	ID, Subject, ContentType string
	Size                     int64
	// SHA256 is the hex SHA-256 of the upload's bytes.
	SHA256 string
}

// Checked says what a Check looked at.
type Checked struct {
	// Uploads is how many uploads had their rows checked; Objects how many
	// had their object read back too (none when blobwriter's bucket is not
	// the pipeline's file:// bucket).
	Uploads, Objects int
}

// maxProblems is how many problems a failed Check names.
const maxProblems = 5

// Check checks that the pipeline made each upload of want whole: its
// reference row (upload_refs: subject, size, sha256, content type), its
// subject's current reference (subject_refs) pointing at it (each upload of
// want must have a subject of its own), its "blob" and "ref" step markers,
// and, when blobwriter writes to the pipeline's file:// bucket, the object
// the row names: its size, the SHA-256 of its bytes, its sha256 metadata
// and its content type. It returns an error naming the first problems.
func (p *Pipeline) Check(ctx context.Context, want []Expected) (Checked, error) {
	type row struct {
		subject, key, sha, contentType string
		size                           int64
		current                        *string
		markers                        int
	}
	ids := make([]string, len(want))
	for i, w := range want {
		ids[i] = w.ID
	}
	rows := map[string]row{}
	err := p.withAdmin(ctx, func(c *pgx.Conn) error {
		s := pgx.Identifier{p.Schema}.Sanitize()
		// Before owners (migration 00010, issue 11) subject_refs was keyed
		// by subject alone; an older build's schema (-services-dir) is
		// checked as that build wrote it.
		var owned bool
		if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT FROM information_schema.columns
			WHERE table_schema = $1 AND table_name = 'subject_refs' AND column_name = 'owner')`, p.Schema).Scan(&owned); err != nil {
			return fmt.Errorf("pipeline: check: %w", err)
		}
		join := "s.subject = r.subject"
		if owned {
			join = "s.owner = r.owner AND " + join
		}
		res, err := c.Query(ctx, `
			SELECT r.id, r.subject, r.blob_key, r.size, r.sha256, r.content_type, s.upload_id,
				(SELECT count(*) FROM `+s+`.step_markers m WHERE m.upload_id = r.id AND m.step = ANY($2))
			FROM `+s+`.upload_refs r LEFT JOIN `+s+`.subject_refs s ON `+join+`
			WHERE r.id = ANY($1)`, ids, []string{events.StepBlob, events.StepRef})
		if err != nil {
			return fmt.Errorf("pipeline: check: %w", err)
		}
		var id string
		var r row
		_, err = pgx.ForEachRow(res, []any{&id, &r.subject, &r.key, &r.size, &r.sha, &r.contentType, &r.current, &r.markers}, func() error {
			rows[id] = r
			return nil
		})
		return err
	})
	if err != nil {
		return Checked{}, err
	}

	var problems []error
	problem := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	for _, w := range want {
		r, ok := rows[w.ID]
		switch {
		case !ok:
			problem("upload %s: no upload_refs row", w.ID)
			continue
		case r.subject != w.Subject || r.size != w.Size || r.sha != w.SHA256 || r.contentType != w.ContentType:
			problem("upload %s: upload_refs has subject %q, size %d, sha256 %s, content type %q; want %q, %d, %s, %q",
				w.ID, r.subject, r.size, r.sha, r.contentType, w.Subject, w.Size, w.SHA256, w.ContentType)
		case r.current == nil || *r.current != w.ID:
			problem("upload %s: subject_refs of %q points at %v, want the upload", w.ID, w.Subject, deref(r.current))
		case r.markers != 2:
			problem("upload %s: %d of the blob and ref step markers, want both", w.ID, r.markers)
		}
	}
	checked := Checked{Uploads: len(want)}
	if _, ok := p.cfg.BlobURLs[BlobWriter]; !ok && len(problems) == 0 {
		bucket, err := fileblob.OpenBucket(p.BlobDir, nil)
		if err != nil {
			return checked, fmt.Errorf("pipeline: check: %w", err)
		}
		defer bucket.Close()
		for _, w := range want {
			if err := checkObject(ctx, bucket, rows[w.ID].key, w); err != nil {
				problems = append(problems, fmt.Errorf("upload %s: %w", w.ID, err))
			}
			checked.Objects++
		}
	}
	if len(problems) > 0 {
		err := fmt.Errorf("pipeline: check: %d of %d uploads are not whole", len(problems), len(want))
		return checked, errors.Join(append([]error{err}, problems[:min(len(problems), maxProblems)]...)...)
	}
	return checked, nil
}

// checkObject reads the object at key and compares it with w.
func checkObject(ctx context.Context, bucket *blob.Bucket, key string, w Expected) error {
	r, err := bucket.NewReader(ctx, key, nil)
	if err != nil {
		return fmt.Errorf("object %s: %w", key, err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return fmt.Errorf("object %s: %w", key, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != w.Size || sum != w.SHA256 {
		return fmt.Errorf("object %s has %d bytes with sha256 %s, want %d with %s", key, n, sum, w.Size, w.SHA256)
	}
	attrs, err := bucket.Attributes(ctx, key)
	if err != nil {
		return fmt.Errorf("object %s: %w", key, err)
	}
	if attrs.ContentType != w.ContentType || attrs.Metadata[events.MetadataSHA256] != w.SHA256 {
		return fmt.Errorf("object %s has content type %q and sha256 metadata %q, want %q and %s",
			key, attrs.ContentType, attrs.Metadata[events.MetadataSHA256], w.ContentType, w.SHA256)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return "nothing"
	}
	return *s
}
