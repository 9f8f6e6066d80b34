package events

import (
	"strconv"
	"time"
)

// Streams and subjects.
const (
	// StreamName is the JetStream stream that holds every pipeline event.
	StreamName = "UPLOADS"
	// StreamSubjects is the subject filter of [StreamName].
	StreamSubjects = "uploads.>"
	// DLQStreamName is the JetStream stream that holds dead letters.
	DLQStreamName = "UPLOADS_DLQ"
	// DLQSubjects is the subject filter of [DLQStreamName]; it does not overlap [StreamSubjects].
	DLQSubjects = "dlq.uploads.>"
)

// Event types (the CloudEvents type attribute).
const (
	// TypeRequested is the type of an upload request, published on [RequestedSubject].
	TypeRequested = "io.blobref.upload.requested.v1"
	// TypeBlobStored is the type blobwriter emits once the bytes are stored, on [BlobStoredSubject].
	TypeBlobStored = "io.blobref.upload.blob_stored.v1"
	// TypeCompleted is the type refwriter emits once the reference is recorded, on [CompletedSubject].
	TypeCompleted = "io.blobref.upload.completed.v1"
)

// CloudEvents extension attributes.
const (
	// ExtSHA256 is the extension attribute that carries the lowercase hex SHA-256 of the
	// uploaded bytes: the operation's fingerprint. It is set on all three types.
	ExtSHA256 = "sha256"
	// ExtDataRef is the extension attribute that carries a claim-check reference (a URI) to
	// the bytes of a requested event whose data does not travel inline.
	ExtDataRef = "dataref"
	// ExtOwner is the extension attribute that names who the subject belongs to: the
	// current reference is kept per owner and subject. A message without it is owned by
	// its source; the builders copy it along the chain.
	ExtOwner = "owner"
	// ExtTraceParent is the traceparent extension attribute of the CloudEvents
	// distributed-tracing extension: the W3C Trace Context traceparent of the
	// span that published the event (see docs/tracing.md). It is optional; the
	// builders copy it from the previous event, and a traced step replaces it
	// with its own publish span's.
	ExtTraceParent = "traceparent"
	// ExtTraceState is the tracestate extension attribute that goes with
	// [ExtTraceParent]: the W3C Trace Context tracestate, vendor data. It is
	// optional, and only allowed with a traceparent.
	ExtTraceState = "tracestate"
)

// Limits of attribute values, in bytes of UTF-8 (see [CheckSubject], [CheckContentType]).
const (
	// MaxSubjectLen is the longest subject.
	MaxSubjectLen = 1024
	// MaxOwnerLen is the longest owner. An event without an owner attribute is owned by its
	// source, which must then be no longer than this either.
	MaxOwnerLen = 1024
	// MaxContentTypeLen is the longest datacontenttype, parameters included.
	MaxContentTypeLen = 256
	// MaxTraceStateLen is the longest tracestate: the 512 characters that W3C
	// Trace Context asks every system to pass on.
	MaxTraceStateLen = 512
)

// DefaultMaxClockSkew is how far in the future an event's time may lie by default before
// consumers refuse it (see [Event.CheckTime]).
const DefaultMaxClockSkew = 5 * time.Minute

// DefaultMaxInlineSize is the largest data (message body) a decoder accepts by default.
// Larger payloads are claim-checked with [ExtDataRef].
const DefaultMaxInlineSize = 1 << 20

// Headers.
const (
	// HeaderPrefix is the prefix of CloudEvents attribute headers in binary content mode.
	// It is matched case-insensitively on decode.
	HeaderPrefix = "ce-"
	// HeaderContentType is the header that marks a structured-mode message
	// (application/cloudevents+json). In binary mode datacontenttype travels in
	// ce-datacontenttype; a non-CloudEvents Content-Type is accepted on decode as well.
	HeaderContentType = "Content-Type"
	// HeaderMsgID is the JetStream de-duplication header. It is never an event attribute.
	HeaderMsgID = "Nats-Msg-Id"
)

// Dead-letter headers, set on messages in [DLQStreamName] in addition to the original headers.
const (
	// HeaderDeadReason carries the dead-letter reason, one of the Reason constants.
	HeaderDeadReason = "Blobref-Dead-Reason"
	// HeaderDeadStep names the step that gave up: [StepBlob] (blobwriter), [StepRef] (refwriter) or
	// another consumer's step.
	HeaderDeadStep = "Blobref-Dead-Step"
	// HeaderDeadDeliveries is the number of deliveries of the original message.
	HeaderDeadDeliveries = "Blobref-Dead-Deliveries"
	// HeaderDeadError is the error text, truncated and made header-safe.
	HeaderDeadError = "Blobref-Dead-Error"
	// HeaderDeadSubject is the original subject.
	HeaderDeadSubject = "Blobref-Dead-Subject"
	// HeaderDeadStream is the original stream name.
	HeaderDeadStream = "Blobref-Dead-Stream"
	// HeaderDeadSequence is the original stream sequence.
	HeaderDeadSequence = "Blobref-Dead-Sequence"
	// HeaderDeadTime is when the message was dead-lettered, in RFC 3339.
	HeaderDeadTime = "Blobref-Dead-Time"
)

// Dead-letter reasons. The first four are also the Reason of an [*InvalidError].
const (
	// ReasonMalformed: not a decodable CloudEvent (bad percent-encoding, bad JSON, missing
	// required context attribute, unsupported specversion).
	ReasonMalformed = "malformed"
	// ReasonInvalid: a CloudEvent that breaks blobref's rules; the error names the attribute.
	ReasonInvalid = "invalid"
	// ReasonUnknownType: the type is none of the three blobref types.
	ReasonUnknownType = "unknown_type"
	// ReasonTooLarge: the data is larger than the decoder accepts.
	ReasonTooLarge = "too_large"
	// ReasonConflict: the id is already known with a different fingerprint.
	ReasonConflict = "conflict"
	// ReasonDigestMismatch: the bytes do not hash to the event's sha256.
	ReasonDigestMismatch = "digest_mismatch"
	// ReasonRetriesExhausted: the step failed on its last allowed delivery.
	ReasonRetriesExhausted = "retries_exhausted"
	// ReasonClaimMissing: the claim-checked bytes a dataref names are gone
	// (expired, or never staged).
	ReasonClaimMissing = "claim_missing"
	// ReasonExpired: the event's time is older than the retention horizon (the UPLOADS
	// stream's max age plus a margin), past which the steps' markers may have been deleted:
	// it is refused rather than redone.
	ReasonExpired = "expired"
)

const (
	streamPrefix = "uploads."
	dlqPrefix    = "dlq."

	maxIDLen = 128
)

// RequestedSubject returns the subject of the requested event of upload id:
// "uploads.requested.<id>".
func RequestedSubject(id string) string { return requestedType.Subject(id) }

// BlobStoredSubject returns the subject of the blob_stored event of upload id:
// "uploads.blob.stored.<id>".
func BlobStoredSubject(id string) string { return blobStoredType.Subject(id) }

// CompletedSubject returns the subject of the completed event of upload id:
// "uploads.completed.<id>".
func CompletedSubject(id string) string { return completedType.Subject(id) }

// DeadLetterSubject returns the subject a dead letter of a message published on subject
// goes to: "dlq." + subject.
func DeadLetterSubject(subject string) string { return dlqPrefix + subject }

// ValidID reports whether id is a valid upload id: 1 to 128 characters of [A-Za-z0-9_-],
// so that it is a single NATS subject token.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isIDByte(id[i]) {
			return false
		}
	}
	return true
}

func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// SubjectFor returns the subject an event of type typ and upload id id is published on: the
// type's SubjectPrefix and the id. It returns an [*InvalidError] for a type that is not
// declared (see [EventType]) or an invalid id.
func SubjectFor(typ, id string) (string, error) {
	if !ValidID(id) {
		return "", invalidf(ReasonInvalid, "id", "not 1 to 128 characters of [A-Za-z0-9_-]")
	}
	t := lookup(typ)
	if t == nil {
		return "", invalidf(ReasonUnknownType, "type", "%q is not a declared event type", clip(typ))
	}
	return t.Subject(id), nil
}

// DerivedMsgID returns the Nats-Msg-Id a consumer step uses for the event it emits after
// consuming the message at sequence seq of stream: a redelivery of that message derives the
// same id (so JetStream drops the duplicate publish inside its window), while a republished
// input is a new message with a new sequence and flows on.
func DerivedMsgID(step, stream string, seq uint64) string {
	return step + "/" + stream + "/" + strconv.FormatUint(seq, 10)
}

// Blob describes a stored object.
type Blob struct {
	// Key is the object key in the bucket, e.g. "uploads/<id>".
	Key string `json:"key"`
	// Size is the object size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex SHA-256 of the object's bytes.
	SHA256 string `json:"sha256"`
	// ContentType is the media type the object was stored with.
	ContentType string `json:"contentType"`
}

// Reference is the reference row refwriter recorded: the payload of a completed event.
type Reference struct {
	// ID is the upload id.
	ID string `json:"id"`
	// Owner is who the subject belongs to: the event's owner. It is absent from completed
	// events recorded before owners existed; when present it equals the event's owner.
	Owner string `json:"owner,omitempty"`
	// Subject is what the reference belongs to, e.g. "users/42/avatar".
	Subject string `json:"subject"`
	// Blob is the object the reference points to.
	Blob Blob `json:"blob"`
	// EventTime is the upload's event time (the time attribute of the request).
	EventTime time.Time `json:"eventTime"`
}

// Event is a decoded, validated blobref event of any declared type (see [EventType]).
//
// For every type the CloudEvents id is the upload id; the source differs per producer.
type Event struct {
	// ID is the upload id and the CloudEvents id.
	ID string
	// Type is a declared event type, such as TypeRequested, TypeBlobStored or TypeCompleted.
	Type string
	// Source is the CloudEvents source (a URI-reference) of the producer.
	Source string
	// Owner is the owner extension: who the subject belongs to. Decode sets it to Source
	// when the message carries none; the builders copy it from the previous event.
	Owner string
	// Subject is the CloudEvents subject: what the reference belongs to, e.g. "users/42/avatar".
	Subject string
	// Time is the upload's event time: set by the producer on requested (required there),
	// copied unchanged to blob_stored and completed. Decoded times are in UTC.
	Time time.Time
	// ContentType is the datacontenttype. requested: the media type of the bytes;
	// blob_stored and completed: "application/json".
	ContentType string
	// SHA256 is the sha256 extension, on all three types.
	SHA256 string
	// DataRef is the dataref extension: requested only, exclusive with Data.
	DataRef string
	// Data is the data. requested: the inline bytes; others: the JSON payload.
	Data []byte
	// TraceParent is the traceparent extension (W3C Trace Context), or "":
	// the span that published the event. See [ExtTraceParent].
	TraceParent string
	// TraceState is the tracestate extension that goes with TraceParent, or "".
	TraceState string
	// Blob is the parsed payload of blob_stored (Data is its JSON); for completed, &Ref.Blob.
	Blob *Blob
	// Ref is the parsed payload of completed.
	Ref *Reference

	// encoded is the payload a builder encoded into Data. While Data, Blob
	// and Ref still hold it, Msg checks the typed payload instead of
	// parsing Data back.
	encoded *encoded
}

// encoded is a builder's payload: the type it built, a private copy of the
// JSON it encoded and the values it encoded it from.
type encoded struct {
	typ  string
	data []byte
	blob Blob
	ref  *Reference // completed only
}

// Request is what a producer supplies to build a requested event with [NewRequested].
type Request struct {
	// ID is the upload id (see [ValidID]).
	ID string
	// Source is the CloudEvents source of the producer, e.g. "/blobref/ingest".
	Source string
	// Owner is who the subject belongs to; "" means Source. ingest sets the authenticated
	// caller; a producer that publishes on its own behalf leaves it empty.
	Owner string
	// Subject is what the reference belongs to, e.g. "users/42/avatar".
	Subject string
	// ContentType is the media type of the bytes.
	ContentType string
	// Time is the upload's event time; zero means now (UTC, truncated to microseconds).
	Time time.Time
	// Data is the inline bytes (exclusive with DataRef). The event refers to it; it is not copied.
	Data []byte
	// DataRef is a claim-check reference to the bytes (a URI with a scheme).
	DataRef string
	// SHA256 is the lowercase hex SHA-256 of the bytes: required with DataRef; computed from
	// Data when empty (and checked against Data when given).
	SHA256 string
	// TraceParent and TraceState are the W3C Trace Context of the span that
	// publishes the request, or "" (see [ExtTraceParent]).
	TraceParent, TraceState string
}
