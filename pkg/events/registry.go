package events

import (
	"fmt"
	"mime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// EventType declares one type of event: its CloudEvents type, the subjects its events are
// published on and what their data must be. Everything this package does with an event
// (subjects, encoding, decoding, validation, the builders) reads the declaration of its type,
// so a new type is one declaration, given to [Register] once, before events of it are decoded.
// The three built-in types are declared the same way (see types.go).
type EventType struct {
	// Type is the CloudEvents type attribute, e.g. "io.blobref.upload.requested.v1".
	Type string
	// SubjectPrefix is where events of the type are published: the event of upload id goes
	// to SubjectPrefix + id. It lies in the stream's subjects ("uploads." then one or more
	// tokens and a dot), and is neither a prefix of another type's nor the other way round,
	// so that a subject names one type.
	SubjectPrefix string
	// ContentType is the datacontenttype of every event of the type, such as
	// "application/json": its data is a payload in that format and never travels by
	// reference. "" means that each event names the media type of its own data, which is
	// opaque bytes (base64 in the JSON event format), as an upload request's are.
	ContentType string
	// DataRef lets an event of a type without ContentType carry its data by reference, in
	// the dataref extension (a URI with a scheme), instead of inline: every event then has
	// exactly one of the two.
	DataRef bool
	// Follows is the type of the event that an event of this type follows in the pipeline
	// (the builders check it); "" means any.
	Follows string
	// Check checks the data of an event of the type, once the attributes every event has
	// passed their checks; nil accepts any data. It returns an [*InvalidError], made with
	// [Invalid], naming what is wrong.
	Check func(e *Event) error

	// payload, for the built-in types, parses and checks the data in one pass and returns
	// the typed payload that Decode keeps in Event.Blob and Event.Ref; it stands for Check.
	payload func(e *Event) (*Blob, *Reference, error)
}

// Filter returns the subject filter of the type's events: SubjectPrefix + ">". A durable
// consumer of the type reads it.
func (t EventType) Filter() string { return t.SubjectPrefix + ">" }

// Subject returns the subject of the event of the type and upload id id.
func (t EventType) Subject(id string) string { return t.SubjectPrefix + id }

// registry is an immutable snapshot of the declared types: Register replaces it whole, so
// that the decoders read it without a lock.
type registry struct {
	byType   map[string]*EventType
	prefixes []*EventType // sorted by SubjectPrefix
}

var (
	registered atomic.Pointer[registry]
	registerMu sync.Mutex // serializes Register
)

// Register declares t, so that events of type t.Type can be built, published, decoded and
// validated. It returns an error, and declares nothing, when the declaration is incomplete
// or clashes with a type declared before (same type, or subjects that overlap). Register is
// safe to call concurrently; a service calls it once per type at start-up (in an init
// function or a package-level variable), before it decodes any event of the type.
func Register(t EventType) error {
	registerMu.Lock()
	defer registerMu.Unlock()
	old := registered.Load()
	if old == nil {
		old = &registry{byType: map[string]*EventType{}}
	}
	if err := t.validate(old); err != nil {
		return fmt.Errorf("events: register %q: %w", t.Type, err)
	}
	next := &registry{byType: make(map[string]*EventType, len(old.byType)+1), prefixes: slices.Clone(old.prefixes)}
	for k, v := range old.byType {
		next.byType[k] = v
	}
	decl := t
	next.byType[t.Type] = &decl
	next.prefixes = append(next.prefixes, &decl)
	slices.SortFunc(next.prefixes, func(a, b *EventType) int { return strings.Compare(a.SubjectPrefix, b.SubjectPrefix) })
	registered.Store(next)
	return nil
}

// MustRegister is [Register] for declarations made at start-up: it panics on an error, which
// is a programming mistake in the declaration.
func MustRegister(t EventType) {
	if err := Register(t); err != nil {
		panic(err)
	}
}

// Lookup returns the declaration of event type typ, and false when typ is not declared.
func Lookup(typ string) (EventType, bool) {
	t := lookup(typ)
	if t == nil {
		return EventType{}, false
	}
	return *t, true
}

// Types returns the declared event types, sorted by subject prefix.
func Types() []EventType {
	r := registered.Load()
	out := make([]EventType, 0, len(r.prefixes))
	for _, t := range r.prefixes {
		out = append(out, *t)
	}
	return out
}

func lookup(typ string) *EventType {
	if r := registered.Load(); r != nil {
		return r.byType[typ]
	}
	return nil
}

// typeOfSubject returns the declared type whose subjects look like subject, and the rest of
// the subject after its prefix (the id, for a well-formed subject).
func typeOfSubject(subject string) (*EventType, string, bool) {
	r := registered.Load()
	if r == nil {
		return nil, "", false
	}
	for _, t := range r.prefixes { // prefixes never overlap: at most one matches
		if rest, ok := strings.CutPrefix(subject, t.SubjectPrefix); ok {
			return t, rest, true
		}
	}
	return nil, "", false
}

// validate checks a declaration against itself and against the types in r.
func (t EventType) validate(r *registry) error {
	switch {
	case t.Type == "":
		return fmt.Errorf("no type")
	case checkText("type", t.Type, maxTextLen) != nil:
		return fmt.Errorf("the type is not printable text")
	case r.byType[t.Type] != nil:
		return fmt.Errorf("already declared")
	case t.ContentType != "" && t.DataRef:
		return fmt.Errorf("a type with a ContentType carries its data inline: DataRef must be false")
	}
	if t.ContentType != "" {
		if mt, _, err := mime.ParseMediaType(t.ContentType); err != nil || mt != t.ContentType {
			return fmt.Errorf("ContentType %q is not a media type without parameters", t.ContentType)
		}
	}
	if t.Follows != "" && r.byType[t.Follows] == nil && t.Follows != t.Type {
		return fmt.Errorf("it follows %q, which is not declared", t.Follows)
	}
	if err := checkPrefix(t.SubjectPrefix); err != nil {
		return err
	}
	for _, o := range r.prefixes {
		if strings.HasPrefix(t.SubjectPrefix, o.SubjectPrefix) || strings.HasPrefix(o.SubjectPrefix, t.SubjectPrefix) {
			return fmt.Errorf("subjects %s overlap those of %s (%s)", t.Filter(), o.Type, o.Filter())
		}
	}
	return nil
}

// checkPrefix checks a subject prefix: "uploads." then tokens of letters, digits, "_" and
// "-", each followed by a dot.
func checkPrefix(p string) error {
	rest, ok := strings.CutPrefix(p, streamPrefix)
	if !ok || rest == "" || !strings.HasSuffix(rest, ".") {
		return fmt.Errorf("SubjectPrefix %q is not %q followed by tokens, each ending in a dot", p, streamPrefix)
	}
	for _, tok := range strings.Split(strings.TrimSuffix(rest, "."), ".") {
		if tok == "" || !ValidID(tok) {
			return fmt.Errorf("SubjectPrefix %q has a token %q that is not [A-Za-z0-9_-]+", p, tok)
		}
	}
	return nil
}

// checkData checks the data of e, an event of type t whose attributes passed checkContext,
// and returns the typed payload of a built-in type.
func (t *EventType) checkData(e *Event) (*Blob, *Reference, error) {
	if t.ContentType == "" {
		if err := t.checkOpaque(e); err != nil {
			return nil, nil, err
		}
	} else if err := t.checkFormatted(e); err != nil {
		return nil, nil, err
	}
	if t.payload != nil {
		return t.payload(e)
	}
	if e.Blob != nil || e.Ref != nil {
		return nil, nil, invalidf(ReasonInvalid, "data", "an event of type %s has no blob or reference payload", clip(t.Type))
	}
	if t.Check != nil {
		if err := t.Check(e); err != nil {
			return nil, nil, err
		}
	}
	return nil, nil, nil
}

// checkOpaque checks an event whose data is bytes of its own media type: inline, or (when
// the type allows it) by reference.
func (t *EventType) checkOpaque(e *Event) error {
	if e.ContentType == "" {
		return invalidf(ReasonInvalid, attrDataContentType, "missing")
	}
	if err := checkMediaType(e.ContentType); err != nil {
		return err
	}
	if !t.DataRef {
		if e.DataRef != "" {
			return invalidf(ReasonInvalid, ExtDataRef, "an event of type %s carries no dataref", clip(t.Type))
		}
		return nil
	}
	switch {
	case len(e.Data) > 0 && e.DataRef != "":
		return invalidf(ReasonInvalid, "data", "data and dataref both set")
	case len(e.Data) == 0 && e.DataRef == "":
		return invalidf(ReasonInvalid, "data", "neither data nor dataref")
	case e.DataRef != "":
		return checkDataRef(e.DataRef)
	}
	return nil
}

// checkFormatted checks an event whose data is a payload in the type's ContentType.
func (t *EventType) checkFormatted(e *Event) error {
	if e.DataRef != "" {
		return invalidf(ReasonInvalid, ExtDataRef, "an event of type %s carries no dataref", clip(t.Type))
	}
	if e.ContentType == "" {
		return invalidf(ReasonInvalid, attrDataContentType, "missing")
	}
	if err := checkMediaType(e.ContentType); err != nil {
		return err
	}
	if mt, _, _ := mime.ParseMediaType(e.ContentType); mt != t.ContentType {
		return invalidf(ReasonInvalid, attrDataContentType, "%q is not %s", clip(e.ContentType), t.ContentType)
	}
	if len(e.Data) == 0 {
		return invalidf(ReasonInvalid, "data", "missing payload")
	}
	return nil
}

// Invalid returns the [*InvalidError] that an [EventType]'s Check returns for an event that
// breaks its rules: reason ReasonInvalid, the attribute at fault (such as "data") and what
// is wrong, in lower case.
func Invalid(attr, format string, args ...any) error {
	return invalidf(ReasonInvalid, attr, format, args...)
}
