package uploadview

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/blobref/blobref/pkg/events"
)

// facts is what Postgres and the streams know of one upload.
type facts struct {
	id     string
	record *Record
	// subject, contentType, size and sha256 of the record.
	subject, contentType, sha256 string
	size                         int64

	blobAt, refAt *time.Time
	blob          *events.Blob // the blob marker's result
	blobSHA256    string       // the blob marker's fingerprint
	ref           *Reference

	// request is the latest request event in UPLOADS, decoded (nil when
	// there is none or it does not decode).
	request *events.Event
	// lastStored is when UPLOADS stored the latest message of each of the
	// upload's subjects.
	lastStored map[string]time.Time
	// letters are the upload's dead letters, oldest first.
	letters []Letter
	// messages are its messages in UPLOADS and UPLOADS_DLQ (Get only).
	messages []Message
}

// known reports whether anything knows of the upload.
func (f *facts) known() bool {
	return f.record != nil || f.blobAt != nil || f.refAt != nil || f.ref != nil ||
		len(f.lastStored) > 0 || len(f.letters) > 0
}

// upload computes the upload's state, steps and timeline from f.
func (f *facts) upload() Upload {
	u := Upload{ID: f.id, Size: -1, Ingest: f.record, DeadLetters: f.letters, Events: f.messages, Reference: f.ref}
	if u.DeadLetters == nil {
		u.DeadLetters = []Letter{}
	}
	f.describe(&u)

	var timeline []Entry
	step := func(name string, at *time.Time, detail string) {
		s := Step{Name: name, Done: at != nil, At: at}
		if at != nil {
			s.Detail = detail
			timeline = append(timeline, Entry{At: *at, Kind: EntryStep, What: name, Detail: detail})
		}
		u.Steps = append(u.Steps, s)
	}
	if f.record != nil {
		r := f.record
		step(StepRecorded, &r.CreatedAt, fmt.Sprintf("ingest recorded it for caller %s, Idempotency-Key %q", r.Caller, r.IdempotencyKey))
	}
	accepted, how := f.accepted()
	step(StepAccepted, accepted, how)
	stored := ""
	if f.blob != nil {
		stored = fmt.Sprintf("blobwriter stored %s (%d bytes)", f.blob.Key, f.blob.Size)
	}
	step(StepStored, f.blobAt, stored)
	completed := ""
	if f.ref != nil {
		completed = fmt.Sprintf("refwriter recorded the reference of %s", f.ref.Subject)
		if f.ref.Current {
			completed += ", its owner's current one"
		}
	}
	var refAt *time.Time
	if f.ref != nil {
		refAt = f.refAt
	}
	step(StepCompleted, refAt, completed)

	for _, m := range f.messages {
		if m.Stream == events.StreamName {
			timeline = append(timeline, Entry{At: m.Stored, Kind: EntryEvent, What: m.Subject, Detail: eventDetail(m)})
		}
	}
	for _, l := range f.letters {
		timeline = append(timeline, Entry{At: l.At(), Kind: EntryDeadLetter, What: l.Reason, Detail: letterDetail(l)})
	}
	slices.SortStableFunc(timeline, func(a, b Entry) int { return a.At.Compare(b.At) })
	u.Timeline = timeline
	if u.Timeline == nil {
		u.Timeline = []Entry{}
	}

	dead := f.failedBy()
	switch {
	case refAt != nil:
		u.State = StateCompleted
	case dead != nil:
		u.State, u.DeadLetter = StateFailed, dead
	case f.blobAt != nil:
		u.State = StateStored
	case accepted != nil || f.record == nil:
		u.State = StatePending
	default:
		u.State = StateRecorded
	}
	return u
}

// describe sets u's subject, owner, content type, size and sha256 from the
// record, the reference or the request, whichever is known first.
func (f *facts) describe(u *Upload) {
	switch {
	case f.record != nil:
		u.Subject, u.Owner, u.ContentType, u.Size, u.SHA256 = f.subject, f.record.Caller, f.contentType, f.size, f.sha256
	case f.ref != nil:
		u.Subject, u.Owner, u.ContentType, u.Size, u.SHA256 = f.ref.Subject, f.ref.Owner, f.ref.Blob.ContentType, f.ref.Blob.Size, f.ref.Blob.SHA256
	case f.request != nil:
		u.Subject, u.Owner, u.ContentType, u.SHA256 = f.request.Subject, f.request.Owner, f.request.ContentType, f.request.SHA256
		if f.request.DataRef == "" {
			u.Size = int64(len(f.request.Data))
		}
	case f.blob != nil:
		u.ContentType, u.Size, u.SHA256 = f.blob.ContentType, f.blob.Size, f.blob.SHA256
	}
}

// accepted returns when JetStream last acknowledged the upload's request,
// the later of ingest's record of it and the latest request in UPLOADS, and
// says which.
func (f *facts) accepted() (*time.Time, string) {
	var at *time.Time
	how := ""
	if f.record != nil && f.record.PublishedAt != nil {
		at, how = f.record.PublishedAt, fmt.Sprintf("ingest published the request (%d %s)", f.record.PublishCount, plural(f.record.PublishCount, "time"))
	}
	if t, ok := f.lastStored[events.RequestedSubject(f.id)]; ok && (at == nil || t.After(*at)) {
		at, how = &t, "the latest request is in "+events.StreamName
	}
	return at, how
}

// failedBy returns the latest dead letter after which no message of its
// subject was stored in UPLOADS (a re-drive, a replay or a retry), or nil.
func (f *facts) failedBy() *Letter {
	var latest *Letter
	for i := range f.letters {
		l := &f.letters[i]
		if l.Err != nil {
			continue
		}
		if t, ok := f.lastStored[l.Subject]; ok && t.After(l.At()) {
			continue
		}
		if latest == nil || l.At().After(latest.At()) {
			latest = l
		}
	}
	if latest == nil {
		return nil
	}
	l := *latest
	return &l
}

// eventDetail says where an event is and, from its Nats-Msg-Id, who
// published it again: a re-drive of a dead letter, or a replay.
func eventDetail(m Message) string {
	id := firstHeader(m.Header, events.HeaderMsgID)
	d := fmt.Sprintf("%s #%d, Nats-Msg-Id %s", m.Stream, m.Seq, id)
	switch {
	case strings.HasPrefix(id, "redrive/"):
		d += ": a re-drive of dead letter " + strings.ReplaceAll(strings.TrimPrefix(id, "redrive/"), "/", " #")
	case strings.HasPrefix(id, "replay-"):
		d += ": a replay"
	}
	return d
}

func letterDetail(l Letter) string {
	if l.Err != nil {
		return fmt.Sprintf("%s #%d: unreadable: %v", events.DLQStreamName, l.Seq, l.Err)
	}
	d := fmt.Sprintf("%s #%d: step %s gave up on %s after %d %s", events.DLQStreamName, l.Seq, l.Step, l.Subject, l.Deliveries, plural(l.Deliveries, "delivery"))
	if l.Error != "" {
		d += ": " + l.Error
	}
	return d
}

func plural[N int | uint64](n N, word string) string {
	if n == 1 {
		return word
	}
	if word == "delivery" {
		return "deliveries"
	}
	return word + "s"
}

// sortLetters sorts letters oldest first.
func sortLetters(ls []Letter) {
	slices.SortStableFunc(ls, func(a, b Letter) int {
		return cmp.Or(a.At().Compare(b.At()), cmp.Compare(a.Seq, b.Seq))
	})
}
