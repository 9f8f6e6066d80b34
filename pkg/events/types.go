package events

import (
	"encoding/json"
	"net/url"
)

// The upload pipeline's own event types, declared as any other type is (see [EventType]).
var (
	requestedType = EventType{
		Type:          TypeRequested,
		SubjectPrefix: streamPrefix + "requested.",
		DataRef:       true, // large bytes are claim-checked
	}
	blobStoredType = EventType{
		Type:          TypeBlobStored,
		SubjectPrefix: streamPrefix + "blob.stored.",
		ContentType:   mediaTypeJSON,
		Follows:       TypeRequested,
		payload:       blobStoredPayload,
	}
	completedType = EventType{
		Type:          TypeCompleted,
		SubjectPrefix: streamPrefix + "completed.",
		ContentType:   mediaTypeJSON,
		Follows:       TypeBlobStored,
		payload:       completedPayload,
	}
)

func init() {
	for _, t := range []EventType{requestedType, blobStoredType, completedType} {
		MustRegister(t)
	}
}

// blobStoredPayload parses the data of a blob_stored event: the JSON of a [Blob] with a key,
// a size >= 0 and the event's sha256, equal to e.Blob when that is set.
func blobStoredPayload(e *Event) (*Blob, *Reference, error) {
	var b Blob
	if err := json.Unmarshal(e.Data, &b); err != nil {
		return nil, nil, invalidWrap(ReasonInvalid, "data", "not a JSON blob", err)
	}
	if err := checkBlob(&b, e.SHA256); err != nil {
		return nil, nil, err
	}
	if e.Blob != nil && *e.Blob != b {
		return nil, nil, invalidf(ReasonInvalid, "data", "Blob does not match the payload")
	}
	if e.Ref != nil {
		return nil, nil, invalidf(ReasonInvalid, "data", "a blob_stored event has no reference payload")
	}
	return &b, nil, nil
}

// completedPayload parses the data of a completed event: the JSON of a [Reference] with the
// event's id, the event's owner (or none) and a blob like blob_stored's, equal to e.Ref and
// e.Blob when they are set.
func completedPayload(e *Event) (*Blob, *Reference, error) {
	var r Reference
	if err := json.Unmarshal(e.Data, &r); err != nil {
		return nil, nil, invalidWrap(ReasonInvalid, "data", "not a JSON reference", err)
	}
	if err := checkReference(&r, e.ID, e.Owner, e.SHA256); err != nil {
		return nil, nil, err
	}
	if e.Ref != nil && !sameReference(e.Ref, &r) {
		return nil, nil, invalidf(ReasonInvalid, "data", "Ref does not match the payload")
	}
	if e.Blob != nil && *e.Blob != r.Blob {
		return nil, nil, invalidf(ReasonInvalid, "data", "Blob does not match the payload")
	}
	return &r.Blob, &r, nil
}

func checkReference(r *Reference, id, owner, sha string) error {
	if r.ID != id {
		return invalidf(ReasonInvalid, "data", "reference id %q does not match the event id", clip(r.ID))
	}
	if r.Owner != "" && r.Owner != owner {
		return invalidf(ReasonInvalid, "data", "reference owner %q does not match the event owner", clip(r.Owner))
	}
	return checkBlob(&r.Blob, sha)
}

func checkBlob(b *Blob, sha string) error {
	switch {
	case b.Key == "":
		return invalidf(ReasonInvalid, "data", "blob key missing")
	case b.Size < 0:
		return invalidf(ReasonInvalid, "data", "blob size %d is negative", b.Size)
	case b.SHA256 != sha:
		return invalidf(ReasonInvalid, "data", "blob sha256 does not match the event sha256")
	}
	return nil
}

func sameReference(a, b *Reference) bool {
	return a.ID == b.ID && a.Owner == b.Owner && a.Subject == b.Subject && a.Blob == b.Blob && a.EventTime.Equal(b.EventTime)
}

// checkDataRef checks a dataref: text as for every attribute, and a URI with a scheme.
func checkDataRef(ref string) error {
	if err := checkText(ExtDataRef, ref, maxTextLen); err != nil {
		return err
	}
	u, err := url.Parse(ref)
	if err != nil {
		return invalidWrap(ReasonInvalid, ExtDataRef, "not a URI", unwrapURLError(err))
	}
	if u.Scheme == "" {
		return invalidf(ReasonInvalid, ExtDataRef, "not a URI: no scheme")
	}
	return nil
}
