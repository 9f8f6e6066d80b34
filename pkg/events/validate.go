package events

import (
	"bytes"
	"math"
	"mime"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	maxTextLen = 4096 // bytes, source and dataref
	noLimit    = math.MaxInt

	mediaTypeJSON = "application/json"
)

// Validate checks e against blobref's rules and returns an [*InvalidError] naming the
// attribute at fault, or nil. Inline data larger than maxInline bytes is ReasonTooLarge;
// maxInline <= 0 means [DefaultMaxInlineSize].
//
// The rules: id, source and type are present (else ReasonMalformed); type is declared (see
// [EventType]; else ReasonUnknownType); id is a valid upload id ([ValidID]); source is a URI-reference;
// owner is present, at most [MaxOwnerLen] bytes; subject follows [CheckSubject]; time is
// present; sha256 is 64 lowercase hex characters; traceparent, when present, is a W3C Trace
// Context traceparent, and tracestate comes only with one (at most [MaxTraceStateLen] bytes). Text attributes are valid UTF-8 without
// control, format, line or paragraph separator characters and without surrounding white
// space. The data follows its type's declaration: an event of a type without a ContentType
// (requested) has a datacontenttype that follows [CheckContentType] and, when the type allows
// a dataref, exactly one of data and dataref (a URI with a scheme); an event of a type with a
// ContentType has that datacontenttype, a payload and no dataref, and passes the type's
// Check. A blob_stored event's data is the JSON of a [Blob] with a key, a size >= 0 and the
// event's sha256; a completed event's data is the JSON of a [Reference] with the event's id,
// the event's owner (or none) and a blob like that. When Blob or Ref is set, it must equal
// the parsed data; events of other types have neither.
func (e *Event) Validate(maxInline int) error {
	if maxInline <= 0 {
		maxInline = DefaultMaxInlineSize
	}
	_, _, err := e.check(maxInline)
	return err
}

// CheckSubject checks a subject attribute against the contract: 1 to [MaxSubjectLen] bytes
// of valid UTF-8; no control (Cc), format (Cf, e.g. U+200B, U+202E, U+FEFF), line or paragraph
// separator characters; no leading or trailing white space; and no ".." segment, a segment
// being what lies between slashes (/ or \). It returns an [*InvalidError] naming the
// attribute "subject", or nil. Producers apply it before they record or stage anything.
func CheckSubject(s string) error {
	if s == "" {
		return invalidf(ReasonInvalid, attrSubject, "missing")
	}
	if err := checkText(attrSubject, s, MaxSubjectLen); err != nil {
		return err
	}
	for seg := range strings.FieldsFuncSeq(s, isSegmentSep) {
		if seg == ".." {
			return invalidf(ReasonInvalid, attrSubject, `has a ".." segment`)
		}
	}
	return nil
}

func isSegmentSep(r rune) bool { return r == '/' || r == '\\' }

// CheckContentType checks a datacontenttype against the contract: at most
// [MaxContentTypeLen] bytes of text as for every attribute, parsing as a type/subtype media
// type (parameters allowed). It returns an [*InvalidError] naming the attribute
// "datacontenttype", or nil. A producer checks the value it will record and send.
func CheckContentType(ct string) error {
	if ct == "" {
		return invalidf(ReasonInvalid, attrDataContentType, "missing")
	}
	return checkMediaType(ct)
}

// CheckTime returns an [*InvalidError] (ReasonInvalid, attribute "time") when e's time lies
// more than maxSkew after now, or nil. Consumers refuse such an event: dated in the future, it
// would hold its subject's current reference until then. maxSkew <= 0 means
// [DefaultMaxClockSkew].
func (e *Event) CheckTime(now time.Time, maxSkew time.Duration) error {
	if maxSkew <= 0 {
		maxSkew = DefaultMaxClockSkew
	}
	if ahead := e.Time.Sub(now); ahead > maxSkew {
		return invalidf(ReasonInvalid, attrTime, "%s is %s in the future, more than the %s allowed",
			e.Time.UTC().Format(time.RFC3339Nano), ahead.Round(time.Second), maxSkew)
	}
	return nil
}

// check validates e and returns the payload parsed from Data (blob_stored, completed).
func (e *Event) check(maxInline int) (*Blob, *Reference, error) {
	if err := e.checkContext(maxInline); err != nil {
		return nil, nil, err
	}
	return lookup(e.Type).checkData(e) // checkContext found the type declared
}

// checkForWire is check for an event about to be encoded. A payload that a
// builder encoded and that nobody changed since (Data, Blob, Ref, Type and
// the content type as the builder left them) is checked as the typed value
// it came from, without parsing Data back; anything else gets the full check.
func (e *Event) checkForWire() error {
	if e == nil || !e.encoded.holds(e) {
		_, _, err := e.check(noLimit)
		return err
	}
	if err := e.checkContext(noLimit); err != nil {
		return err
	}
	if e.Ref != nil {
		return checkReference(e.Ref, e.ID, e.Owner, e.SHA256)
	}
	return checkBlob(e.Blob, e.SHA256)
}

// holds reports whether e still carries exactly the payload c describes.
func (c *encoded) holds(e *Event) bool {
	if c == nil || e.Type != c.typ || e.ContentType != mediaTypeJSON || e.DataRef != "" || e.Blob == nil ||
		*e.Blob != c.blob || !bytes.Equal(e.Data, c.data) {
		return false
	}
	if c.ref == nil {
		return e.Ref == nil
	}
	return e.Ref != nil && e.Blob == &e.Ref.Blob && sameReference(e.Ref, c.ref)
}

// checkContext checks everything but the payload of a blob_stored or
// completed event: the context attributes, the extensions and the size of
// the data.
func (e *Event) checkContext(maxInline int) error {
	if e == nil {
		return invalidf(ReasonMalformed, "", "nil event")
	}
	if err := e.checkHead(); err != nil {
		return err
	}
	if err := checkText("source", e.Source, maxTextLen); err != nil {
		return err
	}
	if _, err := url.Parse(e.Source); err != nil {
		return invalidWrap(ReasonInvalid, "source", "not a URI-reference", unwrapURLError(err))
	}
	if e.Owner == "" {
		return invalidf(ReasonInvalid, ExtOwner, "missing")
	}
	if err := checkText(ExtOwner, e.Owner, MaxOwnerLen); err != nil {
		return err
	}
	if err := CheckSubject(e.Subject); err != nil {
		return err
	}
	if e.Time.IsZero() {
		return invalidf(ReasonInvalid, "time", "missing")
	}
	if y := e.Time.UTC().Year(); y < 0 || y > 9999 {
		return invalidf(ReasonInvalid, "time", "year %d out of range", y)
	}
	if e.SHA256 == "" {
		return invalidf(ReasonInvalid, ExtSHA256, "missing")
	}
	if !validSHA256(e.SHA256) {
		return invalidf(ReasonInvalid, ExtSHA256, "not 64 lowercase hex characters")
	}
	if err := checkTrace(e.TraceParent, e.TraceState); err != nil {
		return err
	}
	if len(e.Data) > maxInline {
		return invalidf(ReasonTooLarge, "data", "%d bytes, more than the %d allowed", len(e.Data), maxInline)
	}
	return nil
}

// checkHead checks the required context attributes, the type and the id.
func (e *Event) checkHead() error {
	switch {
	case e.ID == "":
		return invalidf(ReasonMalformed, "id", "missing")
	case e.Source == "":
		return invalidf(ReasonMalformed, "source", "missing")
	case e.Type == "":
		return invalidf(ReasonMalformed, "type", "missing")
	}
	if lookup(e.Type) == nil {
		return invalidf(ReasonUnknownType, "type", "%q is not a declared event type", clip(e.Type))
	}
	if !ValidID(e.ID) {
		return invalidf(ReasonInvalid, "id", "not 1 to 128 characters of [A-Za-z0-9_-]")
	}
	return nil
}

func checkMediaType(ct string) error {
	if err := checkText("datacontenttype", ct, MaxContentTypeLen); err != nil {
		return err
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return invalidWrap(ReasonInvalid, "datacontenttype", "not a media type", err)
	}
	if typ, sub, ok := strings.Cut(mt, "/"); !ok || typ == "" || sub == "" {
		return invalidf(ReasonInvalid, "datacontenttype", "%q is not a type/subtype media type", clip(ct))
	}
	return nil
}

// checkText checks a free-text attribute value: at most max bytes of valid UTF-8, no control,
// format, line or paragraph separator characters, no leading or trailing white space.
func checkText(attr, s string, max int) error {
	if len(s) > max {
		return invalidf(ReasonInvalid, attr, "longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return invalidf(ReasonInvalid, attr, "not valid UTF-8")
	}
	if i := strings.IndexFunc(s, hidden); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		what := "a control character"
		switch {
		case unicode.Is(unicode.Cf, r):
			what = "a format character"
		case unicode.In(r, unicode.Zl, unicode.Zp):
			what = "a line or paragraph separator"
		}
		return invalidf(ReasonInvalid, attr, "contains %U, %s", r, what)
	}
	if strings.TrimSpace(s) != s {
		return invalidf(ReasonInvalid, attr, "leading or trailing white space")
	}
	return nil
}

// hidden reports whether r is a character that text attributes may not hold: a control (Cc)
// or format (Cf) character, or a line or paragraph separator. They are invisible or reorder
// what is shown, so two subjects that look alike could differ.
func hidden(r rune) bool {
	if r < utf8.RuneSelf { // ASCII, nearly every character: its controls only
		return r < 0x20 || r == 0x7f
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the (untrusted) input.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
