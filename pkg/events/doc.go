// Package events is the public contract of blobref's upload pipeline: it builds, encodes,
// decodes and validates the CloudEvents that flow over NATS JetStream, names the streams,
// subjects and consumers, and describes dead letters. Services import it to publish and
// parse these events correctly; it depends only on the CloudEvents Go SDK (for the event
// model) and nats.go.
//
// # Pipeline
//
// A producer publishes a requested event; blobwriter stores the bytes and emits blob_stored;
// refwriter records the reference and emits completed:
//
//	uploads.requested.<id>    io.blobref.upload.requested.v1    producer (ingest, any service, nats pub)
//	uploads.blob.stored.<id>  io.blobref.upload.blob_stored.v1  blobwriter (durable consumer "blobwriter")
//	uploads.completed.<id>    io.blobref.upload.completed.v1    refwriter (durable consumer "refwriter")
//
// All of them live in the stream UPLOADS (subjects "uploads.>"); dead letters live in
// UPLOADS_DLQ (subjects "dlq.uploads.>"), which does not overlap it. [EnsureStreams] creates
// or updates both at start-up. Both are bounded in bytes (1 GiB and 256 MiB by default) and
// refuse new messages once full instead of dropping old ones; an UPLOADS message is at most
// the inline limit plus 64 KiB of headers.
//
// # Event types
//
// Each type is declared once, as an [EventType]: its CloudEvents type, the subject prefix its
// events are published under (the subject is the prefix and the upload id), its content type
// and the check of its data. Subjects, encoding, decoding, validation and the builders read
// the declaration; the three types above are declared so too. A service that adds a type of
// its own (a scan verdict, a thumbnail, ...) declares it with [Register] or [MustRegister] at
// start-up, builds its events with [Follow] and publishes them on UPLOADS like the others:
//
//	events.MustRegister(events.EventType{
//		Type:          "io.example.upload.scanned.v1",
//		SubjectPrefix: "uploads.scanned.",
//		ContentType:   "application/json",
//		Follows:       events.TypeBlobStored,
//		Check:         checkVerdict, // returns events.Invalid("data", ...) for bad data
//	})
//
// The pipeline's own steps, their durable consumers and the sources of their events are named
// once too: [BlobWriterConsumer], [RefWriterConsumer], [StepBlob], [SourceIngest], ...
//
// # Attributes
//
// Events are CloudEvents 1.0. <id> is the upload id and the idempotency key of the whole
// operation: 1 to 128 characters of [A-Za-z0-9_-] (one NATS subject token, see [ValidID]). It
// is the CloudEvents id of all three events, and the last token of their subject; the type must
// match the subject's kind. The source names the producer and differs per step.
//
//   - specversion "1.0", id, source, type: required.
//   - subject: required; what the reference belongs to, e.g. "users/42/avatar". The rules
//     ([CheckSubject]): at most 1024 bytes of UTF-8; no control, format (U+200B, U+202E,
//     U+FEFF, ...), line or paragraph separator characters; no surrounding white space; no
//     ".." segment between slashes (/ or \).
//   - owner (extension): who the subject belongs to (see Owners). Optional on requested,
//     where it defaults to the source; copied unchanged to blob_stored and completed.
//   - time: required; the upload's event time, set by the producer and copied unchanged to
//     blob_stored and completed (the current reference of a subject follows it).
//   - sha256 (extension): required on all three; the lowercase hex SHA-256 of the bytes, the
//     operation's fingerprint. The same id with another fingerprint is a conflict.
//   - datacontenttype: requested: the media type of the bytes, at most 256 bytes
//     ([CheckContentType]); blob_stored and completed: application/json, with a [Blob] and a
//     [Reference] as the payload.
//   - dataref (extension): requested only, see Claim check.
//   - traceparent, tracestate (extensions, the CloudEvents distributed-tracing extension):
//     optional on all three; the W3C Trace Context of the span that published the event,
//     copied along the chain by the builders (see [ExtTraceParent]).
//
// Text attributes (source, owner, subject, datacontenttype, dataref) are valid UTF-8 without
// control, format, line or paragraph separator characters and without surrounding white
// space. A producer applies [CheckSubject] and [CheckContentType] to what its callers send
// before it records or stages anything, so that the event it publishes later is accepted.
//
// # Owners
//
// A subject has an owner, and the current reference of a subject is kept per owner and
// subject: two owners who use the same subject never move each other's reference. The
// owner is the owner extension attribute. JetStream does not record which NATS user
// published a message, so the owner is what the producer states: ingest sets the caller its
// bearer token authenticated; a producer that publishes on its own behalf leaves the
// attribute out and owns its subjects under its source. ingest's callers are named by
// [A-Za-z0-9._@-], never with a slash or a colon, so a source such as "/billing" or
// "urn:billing" cannot be mistaken for one of them.
//
// The trust boundary is the right to publish: NATS permissions decide who may publish
// requested events (and, for the services, blob_stored and completed), and a publisher is
// trusted to state the owner and the time honestly, as ingest does for its callers. Nobody
// without that right can act as an owner; whoever has it can. Consumers check what does
// not depend on that trust: a claim check must name the staging bucket and the event's own
// id, a blob key must be the configured prefix and the id, and a time more than a few
// minutes in the future ([Event.CheckTime]) is refused.
//
// # Content modes
//
// Producers publish in binary content mode ([Event.Msg]), following the 1.0.3 draft of the
// CloudEvents NATS protocol binding: every attribute is a header named ce-<attribute>
// (datacontenttype too, as ce-datacontenttype), and the body is the data. Header values are
// percent-encoded as the binding (and the HTTP binding) prescribes: space, double quote,
// percent and every character outside printable ASCII become %XX of their UTF-8 bytes, so
// "users/42 é" travels as "users/42%20%C3%A9". An event can be published by hand:
//
//	nats pub uploads.requested.abc123 'hello' \
//	  -H 'ce-specversion:1.0' -H 'ce-id:abc123' -H 'ce-source:/cli' \
//	  -H 'ce-type:io.blobref.upload.requested.v1' -H 'ce-subject:users/42/avatar' \
//	  -H 'ce-time:2025-01-02T03:04:05Z' -H 'ce-datacontenttype:text/plain' \
//	  -H 'ce-sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824' \
//	  -H 'Nats-Msg-Id:abc123'
//
// [Decode] also accepts binary messages whose header names differ in case (Ce-Id), values in
// double quotes, and datacontenttype in a Content-Type header, and it accepts structured
// content mode: a Content-Type of application/cloudevents+json and the JSON event format as the
// body (data_base64 for binary data, data for JSON or text data). A message with neither a
// Content-Type nor any ce- header is read as structured too, as the released 1.0.2 binding
// (payload only, no headers) sends it. Any other application/cloudevents* format is malformed.
//
// The binding maps datacontenttype to ce-datacontenttype like any other attribute and keeps
// Content-Type to mark structured mode; the sdk-go NATS JetStream binding writes
// ce-datacontenttype too, and reads a lower-case content-type header as a fallback.
//
// # Claim check
//
// Small payloads travel inline as the body. A requested event whose bytes are too large for a
// message (more than [DefaultMaxInlineSize] by default, or the server's max_payload) carries
// no body: the producer first stores the bytes (in a JetStream Object Store bucket) and sets
// the dataref extension to a URI naming them; sha256 is then required from the producer. A
// requested event has exactly one of data and dataref. blobwriter accepts only
// nats-object://<staging bucket>/<id>: the staging bucket it is configured with and the
// event's own id, so an event can only bring its own staged bytes. Object Store links are
// refused; any other dataref is dead-lettered as invalid.
//
// # De-duplication
//
// Every publish sets Nats-Msg-Id, which JetStream de-duplicates within the stream's window
// (2 minutes by default). It is not an event attribute. A producer uses the upload id, so a
// retried request is stored once. A consumer derives the id of the event it emits from the
// message it consumed ([DerivedMsgID]: its step, stream and stream sequence): a redelivery of
// the same input cannot emit twice, while a republished input, a new message, flows on down
// the chain even inside the window. The steps' completion markers, not the window, make side
// effects happen once.
//
// # Dead letters
//
// A step that gives up on a message terminates it and publishes [DeadLetterMsg] to
// dlq.<original subject>: the original headers (less Nats-* publish directives) and body, so a
// claim-checked event keeps its dataref, plus these headers, read back by [ParseDeadLetter]:
//
//	Blobref-Dead-Reason      one of the reasons below
//	Blobref-Dead-Step        the step that gave up: blob (blobwriter) or ref (refwriter)
//	Blobref-Dead-Deliveries  deliveries of the original message
//	Blobref-Dead-Error       the error text, at most 1 KiB, one line
//	Blobref-Dead-Subject     the original subject
//	Blobref-Dead-Stream      the original stream
//	Blobref-Dead-Sequence    the original stream sequence
//	Blobref-Dead-Time        when, in RFC 3339
//
// The reasons: malformed (not a decodable CloudEvent: bad percent-encoding, bad JSON, a
// missing required context attribute, an unsupported specversion), invalid (a CloudEvent that
// breaks the rules above, a dataref other than the event's own staged bytes, a blob key other
// than the configured one, a time too far in the future; the error names the attribute), unknown_type, too_large (inline data
// over the decoder's limit), conflict (the id is known with another sha256), digest_mismatch
// (the bytes do not hash to sha256), retries_exhausted (the last delivery failed),
// claim_missing (the bytes a dataref names are gone) and expired (the event's time is older
// than the retention horizon, the stream's max age plus a margin). The first four are what [Decode]
// reports in an [*InvalidError]; [ReasonOf] extracts it.
package events
