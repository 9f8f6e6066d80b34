package uploads

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/pkg/events"
)

// Listing limits: List returns DefaultListLimit uploads unless asked for
// more, and never more than MaxListLimit.
const (
	DefaultListLimit = 50
	MaxListLimit     = 200
)

// ErrBadCursor is returned by List for a cursor it did not hand out.
var ErrBadCursor = errors.New("uploads: not a cursor of this listing")

// ListQuery asks for a page of a caller's uploads.
type ListQuery struct {
	Caller string
	// Subject, if set, keeps the uploads of that subject only.
	Subject string
	// State, if set, keeps the uploads in that state only (StatePending,
	// StateStored, StateCompleted or StateFailed).
	State string
	// Limit is the most uploads on the page [DefaultListLimit]; at most
	// MaxListLimit.
	Limit int
	// Cursor is the Next of the previous page; "" starts at the newest.
	Cursor string
}

// Page is a page of uploads, newest first.
type Page struct {
	Uploads []State `json:"uploads"`
	// Next is the cursor of the following page; "" on the last page.
	Next string `json:"next,omitempty"`
}

// eventsOnlyColumns are the columns of an upload that only the read model
// knows of (published over NATS, not through ingest), then the
// viewColumns.
const eventsOnlyColumns = `rm.id, rm.subject, rm.content_type, rm.size, rm.sha256,
	coalesce(rm.event_time, rm.seen_at), rm.seen_at, NULL::timestamptz, NULL::bigint, `

// selectEventsOnly reads the upload $1 when ingest did not accept it and
// the read model records $2 as its owner.
const selectEventsOnly = `SELECT ` + eventsOnlyColumns + viewColumns + `
FROM ingest_upload_view rm
WHERE rm.id = $1 AND rm.owner = $2 AND rm.owner <> ''
  AND NOT EXISTS (SELECT FROM ingest_uploads u WHERE u.id = rm.id)`

// selectPage lists the uploads of caller $1, newest first: those ingest
// accepted from it (by when it accepted them) and those only the read
// model knows of whose owner it is (by when ingest learned of them).
// $2 subject or ”, $3 state or ”, $4 and $5 the cursor's time and id (or
// NULL), $6 the limit.
var selectPage = `
SELECT rm.id, rm.subject, rm.content_type, rm.size, rm.sha256, rm.created_at, rm.listed_at, rm.published_at,
	rm.published_seq, ` + viewColumns + `
FROM (
	SELECT u.id, u.subject, u.content_type, u.size, u.sha256, u.created_at, u.created_at AS listed_at, u.published_at,
		u.published_seq,
		` + viewColumns + `, ` + `(` + stateSQLOverU + `) AS state
	FROM ingest_uploads u LEFT JOIN ingest_upload_view rm ON rm.id = u.id
	WHERE u.caller = $1 AND ($2 = '' OR u.subject = $2)
	UNION ALL
	SELECT ` + eventsOnlyColumns + viewColumns + `, (` + stateSQLEventsOnly + `)
	FROM ingest_upload_view rm
	WHERE rm.owner = $1 AND rm.owner <> '' AND ($2 = '' OR rm.subject = $2)
	  AND NOT EXISTS (SELECT FROM ingest_uploads u WHERE u.id = rm.id)
) rm
WHERE ($3 = '' OR rm.state = $3)
  AND ($4::timestamptz IS NULL OR (rm.listed_at, rm.id) < ($4::timestamptz, $5::text))
ORDER BY rm.listed_at DESC, rm.id DESC
LIMIT $6`

var (
	stateSQLOverU      = stateSQL("u.published_seq")
	stateSQLEventsOnly = stateSQL("NULL::bigint")
)

// listedScan receives a row of selectEventsOnly or selectPage.
type listedScan struct {
	id, subject, contentType, sha string
	size                          int64
	createdAt, listedAt           time.Time
	publishedAt                   *time.Time
	publishedSeq                  *int64
	view                          viewScan
}

func (c *listedScan) targets() []any {
	return append([]any{&c.id, &c.subject, &c.contentType, &c.size, &c.sha, &c.createdAt, &c.listedAt, &c.publishedAt, &c.publishedSeq},
		c.view.targets()...)
}

func (c *listedScan) state() State {
	st := State{ID: c.id, Subject: c.subject, ContentType: c.contentType, Size: c.size, SHA256: c.sha,
		CreatedAt: c.createdAt.UTC()}
	if c.publishedAt != nil {
		st.Steps.Accepted = &Step{At: c.publishedAt.UTC()}
	}
	c.view.view(c.id).fold(&st, c.publishedSeq)
	return st
}

// loadEventsOnly returns the state of upload id that ingest did not accept,
// if the read model records caller as its owner; ErrNotFound otherwise.
func (s *Service) loadEventsOnly(ctx context.Context, caller, id string) (State, error) {
	var c listedScan
	err := s.Pool.QueryRow(ctx, selectEventsOnly, id, caller).Scan(c.targets()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return State{}, ErrNotFound
	}
	if err != nil {
		return State{}, unavailable("read upload", err)
	}
	return c.state(), nil
}

// List returns a page of q.Caller's uploads, newest first. A cursor is
// stable: uploads that arrive while a client pages are newer than its
// cursor, so a walk sees each upload that existed when it began once.
// Errors: ErrBadCursor, *UnavailableError.
func (s *Service) List(ctx context.Context, q ListQuery) (Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	var at *time.Time
	var afterID string
	if q.Cursor != "" {
		t, id, err := parseCursor(q.Cursor)
		if err != nil {
			return Page{}, err
		}
		at, afterID = &t, id
	}
	rows, err := s.Pool.Query(ctx, selectPage, q.Caller, q.Subject, q.State, at, afterID, limit+1)
	if err != nil {
		return Page{}, unavailable("list uploads", err)
	}
	page := Page{Uploads: []State{}}
	var (
		c    listedScan
		last listedScan
	)
	_, err = pgx.ForEachRow(rows, c.targets(), func() error {
		if len(page.Uploads) == limit {
			page.Next = cursor(last.listedAt, last.id)
			return nil
		}
		page.Uploads = append(page.Uploads, c.state())
		last.listedAt, last.id = c.listedAt, c.id
		return nil
	})
	if err != nil {
		return Page{}, unavailable("list uploads", err)
	}
	return page, nil
}

// cursorVersion starts every cursor, so that its format may change.
const cursorVersion = "1."

// cursor is the opaque cursor of the uploads listed after (at, id).
func cursor(at time.Time, id string) string {
	raw := strconv.FormatInt(at.UnixMicro(), 10) + "." + id
	return cursorVersion + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// parseCursor reverses cursor; ErrBadCursor for anything cursor did not
// make.
func parseCursor(c string) (time.Time, string, error) {
	enc, ok := strings.CutPrefix(c, cursorVersion)
	if !ok {
		return time.Time{}, "", ErrBadCursor
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return time.Time{}, "", ErrBadCursor
	}
	micros, id, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(micros, 10, 64)
	if !ok || err != nil || !events.ValidID(id) {
		return time.Time{}, "", ErrBadCursor
	}
	return time.UnixMicro(n).UTC(), id, nil
}
