package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// NewRequested builds and validates a requested event from r. An empty r.Owner becomes
// r.Source: a producer that publishes on its own behalf owns its subjects. When r.Data is set, the
// sha256 extension is computed from it (and r.SHA256, when given, must match); with r.DataRef
// r.SHA256 is required. A zero r.Time becomes the current time in UTC, truncated to
// microseconds (what Postgres keeps). Inline data is limited to [DefaultMaxInlineSize]:
// larger payloads are claim-checked.
func NewRequested(r Request) (*Event, error) {
	e := &Event{
		ID:          r.ID,
		Type:        TypeRequested,
		Source:      r.Source,
		Owner:       r.Owner,
		Subject:     r.Subject,
		Time:        r.Time.UTC(),
		ContentType: r.ContentType,
		SHA256:      r.SHA256,
		DataRef:     r.DataRef,
		Data:        r.Data,
		TraceParent: r.TraceParent,
		TraceState:  r.TraceState,
	}
	if e.Owner == "" {
		e.Owner = r.Source
	}
	if r.Time.IsZero() {
		e.Time = time.Now().UTC().Truncate(time.Microsecond)
	}
	if len(r.Data) > 0 {
		sum := sha256.Sum256(r.Data)
		computed := hex.EncodeToString(sum[:])
		if r.SHA256 != "" {
			if !validSHA256(r.SHA256) {
				return nil, invalidf(ReasonInvalid, ExtSHA256, "not 64 lowercase hex characters")
			}
			if r.SHA256 != computed {
				return nil, invalidf(ReasonInvalid, ExtSHA256, "does not match the data")
			}
		}
		e.SHA256 = computed
	}
	if _, _, err := e.check(DefaultMaxInlineSize); err != nil {
		return nil, err
	}
	return e, nil
}

// NewBlobStored builds and validates the blob_stored event that follows the requested event
// req once the bytes are stored as b. It copies ID, Owner, Subject, Time, SHA256 and the trace
// context (TraceParent, TraceState) from req; source
// is the emitting service's CloudEvents source. Data is the JSON of b and Blob points to a
// copy of b; b.SHA256 must equal req.SHA256.
func NewBlobStored(req *Event, b Blob, source string) (*Event, error) {
	if err := checkPrevious(req, blobStoredType.Follows); err != nil {
		return nil, err
	}
	data, err := json.Marshal(b)
	if err != nil {
		return nil, invalidWrap(ReasonInvalid, "data", "cannot encode blob", err)
	}
	e := &Event{
		ID:          req.ID,
		Type:        TypeBlobStored,
		Source:      source,
		Owner:       req.Owner,
		Subject:     req.Subject,
		Time:        req.Time,
		ContentType: mediaTypeJSON,
		SHA256:      req.SHA256,
		Data:        data,
		TraceParent: req.TraceParent,
		TraceState:  req.TraceState,
		Blob:        &b,
	}
	e.encoded = &encoded{typ: TypeBlobStored, data: bytes.Clone(data), blob: b}
	if err := e.checkForWire(); err != nil { // b as it is: Data is its own JSON
		return nil, err
	}
	return e, nil
}

// NewCompleted builds and validates the completed event that follows the blob_stored event
// stored once refwriter recorded ref. It copies ID, Owner, Subject, Time, SHA256 and the trace
// context from stored; source is the emitting service's CloudEvents source. Data is the JSON of ref, Ref
// points to a copy of ref and Blob to its Blob; ref.ID must equal stored.ID, ref.Owner
// stored.Owner (an empty ref.Owner becomes it) and ref.Blob.SHA256 stored.SHA256.
func NewCompleted(stored *Event, ref Reference, source string) (*Event, error) {
	if err := checkPrevious(stored, completedType.Follows); err != nil {
		return nil, err
	}
	if ref.Owner == "" {
		ref.Owner = stored.Owner
	}
	data, err := json.Marshal(ref)
	if err != nil {
		return nil, invalidWrap(ReasonInvalid, "data", "cannot encode reference", err)
	}
	e := &Event{
		ID:          stored.ID,
		Type:        TypeCompleted,
		Source:      source,
		Owner:       stored.Owner,
		Subject:     stored.Subject,
		Time:        stored.Time,
		ContentType: mediaTypeJSON,
		SHA256:      stored.SHA256,
		Data:        data,
		TraceParent: stored.TraceParent,
		TraceState:  stored.TraceState,
		Ref:         &ref,
	}
	e.Blob = &e.Ref.Blob
	kept := ref // e.Ref points to ref itself
	e.encoded = &encoded{typ: TypeCompleted, data: bytes.Clone(data), blob: ref.Blob, ref: &kept}
	if err := e.checkForWire(); err != nil { // ref as it is: Data is its own JSON
		return nil, err
	}
	return e, nil
}

// Follow builds and validates the event of declared type typ that follows prev, the event a
// step consumed: it copies ID, Owner, Subject, Time, SHA256 and the trace context from prev, and its source is
// the emitting service's. data is the event's data, not copied: a payload in the type's
// ContentType, or, for a type without one, bytes of prev's datacontenttype. When the type
// declares what it Follows, prev must be of that type. The typed payload of a built-in type
// (Blob, Ref) is parsed from data.
func Follow(prev *Event, typ, source string, data []byte) (*Event, error) {
	t := lookup(typ)
	if t == nil {
		return nil, invalidf(ReasonUnknownType, "type", "%q is not a declared event type", clip(typ))
	}
	if prev == nil {
		return nil, invalidf(ReasonInvalid, "type", "no previous event")
	}
	if err := checkPrevious(prev, t.Follows); err != nil {
		return nil, err
	}
	e := &Event{
		ID:          prev.ID,
		Type:        typ,
		Source:      source,
		Owner:       prev.Owner,
		Subject:     prev.Subject,
		Time:        prev.Time,
		ContentType: t.ContentType,
		SHA256:      prev.SHA256,
		Data:        data,
		TraceParent: prev.TraceParent,
		TraceState:  prev.TraceState,
	}
	if e.ContentType == "" {
		e.ContentType = prev.ContentType
	}
	b, r, err := e.check(noLimit)
	if err != nil {
		return nil, err
	}
	e.Blob, e.Ref = b, r
	return e, nil
}

// checkPrevious checks that prev is an event of type typ; "" allows any.
func checkPrevious(prev *Event, typ string) error {
	if prev == nil {
		return invalidf(ReasonInvalid, "type", "no previous event")
	}
	if typ != "" && prev.Type != typ {
		return invalidf(ReasonInvalid, "type", "previous event is %q, want %q", clip(prev.Type), typ)
	}
	return nil
}
