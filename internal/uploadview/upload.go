package uploadview

import (
	"time"

	"github.com/blobref/blobref/pkg/events"
)

// State is where an upload stands.
type State string

// The states of an upload.
const (
	// StateRecorded: ingest recorded the upload, and JetStream has not
	// acknowledged its request (a crash or an outage between the two).
	StateRecorded State = "recorded"
	// StatePending: the request is in UPLOADS; the bytes are not stored.
	StatePending State = "pending"
	// StateStored: the bytes are stored; the reference is not recorded.
	StateStored State = "stored"
	// StateCompleted: the reference is recorded.
	StateCompleted State = "completed"
	// StateFailed: a step dead-lettered one of the upload's events, and no
	// event of that subject was published since.
	StateFailed State = "failed"
)

// Upload is what the pipeline did with one upload.
type Upload struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	// Subject, Owner, ContentType, Size and SHA256 are the upload's, from
	// ingest's record, its reference or its request event, whichever is
	// known; empty (Size -1) when none is.
	Subject     string `json:"subject,omitempty"`
	Owner       string `json:"owner,omitempty"`
	ContentType string `json:"contentType,omitempty"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256,omitempty"`
	// Ingest is ingest's record, for an upload sent over HTTP.
	Ingest *Record `json:"ingest,omitempty"`
	// Steps are recorded (an ingest upload only), accepted, stored and
	// completed, in this order, each done or not.
	Steps []Step `json:"steps"`
	// Reference is the reference refwriter recorded.
	Reference *Reference `json:"reference,omitempty"`
	// DeadLetter is the dead letter that failed the upload (StateFailed).
	DeadLetter *Letter `json:"deadLetter,omitempty"`
	// DeadLetters are the upload's dead letters still in UPLOADS_DLQ,
	// oldest first: the latest of each subject, or with Get all of them.
	DeadLetters []Letter `json:"deadLetters"`
	// Timeline is what happened to the upload, oldest first.
	Timeline []Entry `json:"timeline"`
	// Events are the upload's messages in UPLOADS and UPLOADS_DLQ, oldest
	// first in each; Get fills them.
	Events []Message `json:"events,omitempty"`
}

// Record is ingest's record of an upload (ingest_uploads).
type Record struct {
	Caller         string    `json:"caller"`
	IdempotencyKey string    `json:"idempotencyKey"`
	DataRef        string    `json:"dataref,omitempty"`
	CreatedAt      time.Time `json:"createdAt"`
	// PublishedAt is when JetStream last acknowledged the request ingest
	// published; nil until it did.
	PublishedAt  *time.Time `json:"publishedAt,omitempty"`
	PublishCount int        `json:"publishCount"`
	// ClaimedUntil: the request that recorded the upload is publishing it
	// until then.
	ClaimedUntil *time.Time `json:"claimedUntil,omitempty"`
}

// Reference is the recorded reference (upload_refs).
type Reference struct {
	events.Reference
	// RecordedAt is when refwriter recorded it.
	RecordedAt time.Time `json:"recordedAt"`
	// Current says whether it is its owner's current reference of its
	// subject (subject_refs).
	Current bool `json:"current"`
}

// The names of the steps.
const (
	StepRecorded  = "recorded"
	StepAccepted  = "accepted"
	StepStored    = "stored"
	StepCompleted = "completed"
)

// Step is one step of an upload.
type Step struct {
	// Name is StepRecorded, StepAccepted, StepStored or StepCompleted.
	Name string     `json:"name"`
	Done bool       `json:"done"`
	At   *time.Time `json:"at,omitempty"`
	// Detail says what the step did, e.g. the object it stored.
	Detail string `json:"detail,omitempty"`
}

// Step returns the step named name, and whether there is one.
func (u Upload) Step(name string) (Step, bool) {
	for _, s := range u.Steps {
		if s.Name == name {
			return s, true
		}
	}
	return Step{}, false
}

// The kinds of timeline entries.
const (
	EntryStep       = "step"        // a step finished
	EntryEvent      = "event"       // an event was stored in UPLOADS
	EntryDeadLetter = "dead_letter" // an event was dead-lettered
)

// Entry is one thing that happened to an upload.
type Entry struct {
	At time.Time `json:"at"`
	// Kind is EntryStep, EntryEvent or EntryDeadLetter; What names the step,
	// the event's subject or the dead letter's reason.
	Kind   string `json:"kind"`
	What   string `json:"what"`
	Detail string `json:"detail,omitempty"`
}
