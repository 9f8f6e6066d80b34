package events

import (
	"errors"
	"slices"

	"github.com/cloudevents/sdk-go/v2/event"
)

// CloudEvent validates e and converts it to the sdk-go event model. The data of a type without
// a ContentType (a requested event's inline bytes) is binary data (data_base64 in the JSON
// format); the payload of a type with one (the JSON of blob_stored and completed) is data. sdk-go may normalise the source (it stores a parsed URI-reference).
func (e *Event) CloudEvent() (event.Event, error) {
	if _, _, err := e.check(noLimit); err != nil {
		return event.Event{}, err
	}
	ce := event.New(event.CloudEventsVersionV1)
	ce.SetID(e.ID)
	ce.SetType(e.Type)
	ce.SetSource(e.Source)
	ce.SetSubject(e.Subject)
	ce.SetTime(e.Time)
	ce.SetDataContentType(e.ContentType)
	ce.SetExtension(ExtSHA256, e.SHA256)
	ce.SetExtension(ExtOwner, e.Owner)
	if e.DataRef != "" {
		ce.SetExtension(ExtDataRef, e.DataRef)
	}
	if e.TraceParent != "" {
		ce.SetExtension(ExtTraceParent, e.TraceParent)
	}
	if e.TraceState != "" {
		ce.SetExtension(ExtTraceState, e.TraceState)
	}
	if len(e.Data) > 0 {
		ce.DataEncoded = slices.Clone(e.Data)
		ce.DataBase64 = lookup(e.Type).ContentType == ""
	}
	if err := ce.Validate(); err != nil {
		return event.Event{}, fromValidationError(err)
	}
	return ce, nil
}

// FromCloudEvent converts a CloudEvent in the sdk-go model to an [Event] and validates it
// (with [DefaultMaxInlineSize]); it parses the Blob and Ref payloads. It returns an
// [*InvalidError] like [Decode] does, without the subject checks.
func FromCloudEvent(ce event.Event) (*Event, error) {
	if ce.Context == nil {
		return nil, invalidf(ReasonMalformed, "specversion", "missing")
	}
	if v := ce.SpecVersion(); v != event.CloudEventsVersionV1 {
		return nil, invalidf(ReasonMalformed, "specversion", "unsupported version %q", clip(v))
	}
	e := &Event{
		ID:          ce.ID(),
		Type:        ce.Type(),
		Source:      ce.Source(),
		Owner:       ce.Source(),
		Subject:     ce.Subject(),
		Time:        ce.Time().UTC(),
		ContentType: ce.DataContentType(),
	}
	if err := e.checkHead(); err != nil {
		return nil, err
	}
	if err := ce.Validate(); err != nil {
		return nil, fromValidationError(err)
	}
	exts := ce.Extensions()
	for _, name := range []string{ExtSHA256, ExtDataRef, ExtOwner, ExtTraceParent, ExtTraceState} {
		v, ok := exts[name]
		if !ok {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return nil, invalidf(ReasonInvalid, name, "not a string")
		}
		switch name {
		case ExtSHA256:
			e.SHA256 = s
		case ExtDataRef:
			e.DataRef = s
		case ExtTraceParent:
			e.TraceParent = s
		case ExtTraceState:
			e.TraceState = s
		default:
			if s == "" {
				return nil, invalidf(ReasonInvalid, ExtOwner, "empty (leave it out for the source to own the subject)")
			}
			e.Owner = s
		}
	}
	if d := ce.Data(); len(d) > 0 {
		e.Data = slices.Clone(d)
	}
	b, r, err := e.check(DefaultMaxInlineSize)
	if err != nil {
		return nil, err
	}
	e.Blob, e.Ref = b, r
	return e, nil
}

// fromValidationError turns an sdk-go validation error into a ReasonMalformed
// [*InvalidError] naming the first attribute at fault.
func fromValidationError(err error) error {
	var ve event.ValidationError
	if errors.As(err, &ve) {
		keys := make([]string, 0, len(ve))
		for k := range ve {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if len(keys) > 0 {
			return invalidWrap(ReasonMalformed, keys[0], "not a valid CloudEvent", ve[keys[0]])
		}
	}
	return invalidWrap(ReasonMalformed, "", "not a valid CloudEvent", err)
}
