package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

const (
	// mediaTypeStructured is the media type of the JSON event format (structured mode).
	mediaTypeStructured = "application/cloudevents+json"
	// structuredPrefix marks structured mode in the NATS binding (matched case-insensitively).
	structuredPrefix = "application/cloudevents"

	specVersion = "1.0"
)

// Context attribute names.
const (
	attrSpecVersion     = "specversion"
	attrID              = "id"
	attrSource          = "source"
	attrType            = "type"
	attrSubject         = "subject"
	attrTime            = "time"
	attrDataContentType = "datacontenttype"
)

// Msg encodes e in binary content mode on subject [SubjectFor](e.Type, e.ID): every attribute
// is a ce-<name> header (lower case, value percent-encoded as the NATS and HTTP bindings
// prescribe), datacontenttype included as ce-datacontenttype (as the NATS binding maps it), the
// body is e.Data (not copied), and Nats-Msg-Id is msgID (omitted when msgID is "").
// It validates e first, without a size limit.
func (e *Event) Msg(msgID string) (*nats.Msg, error) {
	if err := e.checkForWire(); err != nil {
		return nil, err
	}
	subject, err := SubjectFor(e.Type, e.ID)
	if err != nil {
		return nil, err
	}
	if msgID != "" && !printableASCII(msgID) {
		return nil, invalidf(ReasonInvalid, HeaderMsgID, "not printable ASCII")
	}
	h := make(nats.Header, 13)
	set := func(name, value string) {
		h[HeaderPrefix+name] = []string{encodeHeaderValue(value)}
	}
	set(attrSpecVersion, specVersion)
	set(attrID, e.ID)
	set(attrSource, e.Source)
	set(ExtOwner, e.Owner)
	set(attrType, e.Type)
	set(attrSubject, e.Subject)
	set(attrTime, e.Time.UTC().Format(time.RFC3339Nano))
	set(attrDataContentType, e.ContentType)
	set(ExtSHA256, e.SHA256)
	if e.DataRef != "" {
		set(ExtDataRef, e.DataRef)
	}
	if e.TraceParent != "" {
		set(ExtTraceParent, e.TraceParent)
	}
	if e.TraceState != "" {
		set(ExtTraceState, e.TraceState)
	}
	if msgID != "" {
		h[HeaderMsgID] = []string{msgID}
	}
	var data []byte
	if len(e.Data) > 0 {
		data = e.Data
	}
	return &nats.Msg{Subject: subject, Header: h, Data: data}, nil
}

// DecodeOption configures [Decode].
type DecodeOption func(*decodeOptions)

type decodeOptions struct {
	maxInline int
}

// WithMaxInlineSize sets the largest data Decode accepts, in bytes; n <= 0 means
// [DefaultMaxInlineSize].
func WithMaxInlineSize(n int) DecodeOption {
	return func(o *decodeOptions) {
		if n <= 0 {
			n = DefaultMaxInlineSize
		}
		o.maxInline = n
	}
}

// Decode parses the message published on subject with header and body data, and validates it.
//
// A Content-Type header whose media type starts with application/cloudevents (any case) marks
// structured mode: application/cloudevents+json (parameters allowed) is the JSON event format,
// with data_base64 for binary data and data for JSON or string data; other formats are
// ReasonMalformed. A message with neither a Content-Type nor any ce- header is structured too,
// as in the released 1.0.2 NATS binding. A structured body larger than the base64 of the
// allowed data plus 64 KiB is ReasonTooLarge before it is parsed.
//
// Otherwise the message is in binary mode: ce-<name> headers (prefix and name
// case-insensitive) carry the attributes, percent-encoded (double-quoted values are unquoted
// first), and the body is the data; datacontenttype is ce-datacontenttype, or the Content-Type
// header when that is absent (both present must agree). An attribute given twice is
// ReasonMalformed. Headers without the ce- prefix (Nats-Msg-Id, the dead-letter headers) are
// not attributes. Unknown extension attributes are ignored.
//
// On top of [Event.Validate], the subject must be the type's SubjectPrefix followed by the id
// (uploads.requested.<id>, uploads.blob.stored.<id>, uploads.completed.<id>, or the subjects
// of another declared type). Errors are [*InvalidError]s. Decode copies what it keeps; it never
// panics, and what it allocates is bounded by the size of its input.
func Decode(subject string, header nats.Header, data []byte, opts ...DecodeOption) (*Event, error) {
	o := decodeOptions{maxInline: DefaultMaxInlineSize}
	for _, opt := range opts {
		opt(&o)
	}
	structured, err := structuredMode(header)
	if err != nil {
		return nil, err
	}
	var w wire
	if structured {
		if len(data) > structuredLimit(o.maxInline) {
			return nil, invalidf(ReasonTooLarge, "data", "%d-byte structured event, more than %d bytes of data allowed", len(data), o.maxInline)
		}
		w, err = parseStructured(data)
	} else {
		if len(data) > o.maxInline {
			return nil, invalidf(ReasonTooLarge, "data", "%d bytes, more than the %d allowed", len(data), o.maxInline)
		}
		w, err = parseBinary(header, data)
	}
	if err != nil {
		return nil, err
	}
	e, err := w.event()
	if err != nil {
		return nil, err
	}
	if err := e.checkHead(); err != nil {
		return nil, err
	}
	if err := checkSubject(subject, e.Type, e.ID); err != nil {
		return nil, err
	}
	b, r, err := e.check(o.maxInline)
	if err != nil {
		return nil, err
	}
	e.Blob, e.Ref = b, r
	return e, nil
}

// structuredLimit is the largest structured-mode body Decode parses when maxInline bytes of
// data are allowed: base64 grows data by 4/3, and the attributes need some room.
func structuredLimit(maxInline int) int {
	const room = 64 << 10
	if maxInline > (math.MaxInt-room)/4*3 {
		return math.MaxInt
	}
	return (maxInline+2)/3*4 + room
}

func checkSubject(subject, typ, id string) error {
	t, rest, ok := typeOfSubject(subject)
	if !ok {
		return invalidf(ReasonInvalid, attrType, "subject %q is not an upload event subject", clip(subject))
	}
	if t.Type != typ {
		return invalidf(ReasonInvalid, attrType, "%s does not match subject %q", typ, clip(subject))
	}
	if rest != id {
		return invalidf(ReasonInvalid, attrID, "%q does not match the subject token %q", id, clip(rest))
	}
	return nil
}

// wire is an event as read off a message: decoded attribute values and the data.
type wire struct {
	attrs map[string]string
	data  []byte
}

// event checks the CloudEvents-level requirements and builds an Event (not yet validated).
func (w wire) event() (*Event, error) {
	v, ok := w.attrs[attrSpecVersion]
	if !ok || v == "" {
		return nil, invalidf(ReasonMalformed, attrSpecVersion, "missing")
	}
	if v != specVersion {
		return nil, invalidf(ReasonMalformed, attrSpecVersion, "unsupported version %q", clip(v))
	}
	for _, name := range []string{attrID, attrSource, attrType} {
		if w.attrs[name] == "" {
			return nil, invalidf(ReasonMalformed, name, "missing")
		}
	}
	e := &Event{
		ID:          w.attrs[attrID],
		Type:        w.attrs[attrType],
		Source:      w.attrs[attrSource],
		Owner:       w.attrs[attrSource],
		Subject:     w.attrs[attrSubject],
		ContentType: w.attrs[attrDataContentType],
		SHA256:      w.attrs[ExtSHA256],
		DataRef:     w.attrs[ExtDataRef],
		TraceParent: w.attrs[ExtTraceParent],
		TraceState:  w.attrs[ExtTraceState],
		Data:        w.data,
	}
	if o, ok := w.attrs[ExtOwner]; ok {
		if o == "" {
			return nil, invalidf(ReasonInvalid, ExtOwner, "empty (leave it out for the source to own the subject)")
		}
		e.Owner = o
	}
	if tp, ok := w.attrs[ExtTraceParent]; ok && tp == "" {
		return nil, invalidf(ReasonInvalid, ExtTraceParent, "empty (leave it out when there is no trace)")
	}
	if t, ok := w.attrs[attrTime]; ok {
		tt, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return nil, invalidf(ReasonInvalid, attrTime, "%q is not an RFC 3339 timestamp", clip(t))
		}
		e.Time = tt.UTC()
	}
	return e, nil
}

// structuredMode reports whether a message with header h is in structured mode: its
// Content-Type says so (1.0.3 draft binding), or it has neither a Content-Type nor any ce-
// header (the released 1.0.2 binding, where the payload is always the JSON event format).
func structuredMode(h nats.Header) (bool, error) {
	ct, key, err := headerValue(h, HeaderContentType)
	if err != nil {
		return false, err
	}
	if key == "" {
		for k := range h {
			if hasPrefixFold(k, HeaderPrefix) {
				return false, nil
			}
		}
		return true, nil
	}
	ct = trimOWS(ct)
	if len(ct) < len(structuredPrefix) || !strings.EqualFold(ct[:len(structuredPrefix)], structuredPrefix) {
		return false, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false, invalidWrap(ReasonMalformed, key, "not a media type", err)
	}
	if mt != mediaTypeStructured {
		return false, invalidf(ReasonMalformed, key, "unsupported event format %q", clip(mt))
	}
	return true, nil
}

// headerValue returns the single value of the header named name, matched
// case-insensitively, and the key it was found under ("" when absent).
func headerValue(h nats.Header, name string) (value, key string, err error) {
	for k, vs := range h {
		if !strings.EqualFold(k, name) || len(vs) == 0 {
			continue
		}
		if key != "" || len(vs) > 1 {
			return "", "", invalidf(ReasonMalformed, name, "header given more than once")
		}
		value, key = vs[0], k
	}
	return value, key, nil
}

// parseBinary reads a binary-mode message.
func parseBinary(h nats.Header, body []byte) (wire, error) {
	w := wire{attrs: make(map[string]string, 10)}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic errors
	for _, k := range keys {
		vs := h[k]
		if len(k) < len(HeaderPrefix) || !strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) || len(vs) == 0 {
			continue
		}
		name := strings.ToLower(k[len(HeaderPrefix):])
		if !validAttrName(name) || name == "data" {
			return wire{}, invalidf(ReasonMalformed, clip(k), "not a CloudEvents attribute header")
		}
		if _, dup := w.attrs[name]; dup || len(vs) > 1 {
			return wire{}, invalidf(ReasonMalformed, name, "header given more than once")
		}
		v, err := decodeHeaderValue(vs[0])
		if err != nil {
			return wire{}, invalidWrap(ReasonMalformed, clip(k), "bad header value", err)
		}
		w.attrs[name] = v
	}
	ct, key, err := headerValue(h, HeaderContentType)
	if err != nil {
		return wire{}, err
	}
	if key != "" {
		ct = trimOWS(ct)
		if dct, ok := w.attrs[attrDataContentType]; !ok {
			w.attrs[attrDataContentType] = ct
		} else if dct != ct {
			return wire{}, invalidf(ReasonMalformed, attrDataContentType, "ce-datacontenttype and Content-Type headers disagree")
		}
	}
	if len(body) > 0 {
		w.data = slices.Clone(body)
	}
	return w, nil
}

// parseStructured reads the JSON event format.
func parseStructured(body []byte) (wire, error) {
	w := wire{attrs: make(map[string]string, 10)}
	malformed := func(attr, msg string, err error) (wire, error) {
		return wire{}, invalidWrap(ReasonMalformed, attr, msg, err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return malformed("", "not a JSON event", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return malformed("", "not a JSON event: not an object", nil)
	}
	var data, data64 json.RawMessage
	seen := make(map[string]bool, 10)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return malformed("", "not a JSON event", err)
		}
		name, _ := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return malformed(clip(name), "not a JSON event", err)
		}
		if seen[name] {
			return malformed(clip(name), "member given more than once", nil)
		}
		seen[name] = true
		switch name {
		case "data":
			data = raw
			continue
		case "data_base64":
			data64 = raw
			continue
		}
		if !validAttrName(name) {
			return malformed(clip(name), "not a CloudEvents attribute name", nil)
		}
		if isNull(raw) {
			continue // null is unset
		}
		if raw[0] != '"' {
			switch name {
			case ExtSHA256, ExtDataRef, ExtOwner, ExtTraceParent, ExtTraceState:
				return wire{}, invalidf(ReasonInvalid, name, "not a string")
			case attrSpecVersion, attrID, attrSource, attrType, attrSubject, attrTime, attrDataContentType, "dataschema":
				return malformed(name, "not a JSON string", nil)
			}
			continue // another extension of another type: ignored
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return malformed(name, "not a JSON string", err)
		}
		w.attrs[name] = s
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return malformed("", "not a JSON event", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return malformed("", "not a JSON event: data after the object", err)
	}

	switch {
	case data != nil && data64 != nil:
		return malformed("data", "data and data_base64 both present", nil)
	case data64 != nil && !isNull(data64):
		var s string
		if err := json.Unmarshal(data64, &s); err != nil {
			return malformed("data_base64", "not a JSON string", err)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return malformed("data_base64", "not base64", err)
		}
		if len(b) > 0 {
			w.data = b
		}
	case data != nil:
		ct, ok := w.attrs[attrDataContentType]
		if !ok {
			// JSON format 3.1.2: no datacontenttype means application/json.
			ct = mediaTypeJSON
			w.attrs[attrDataContentType] = ct
		}
		if isJSONMediaType(ct) {
			w.data = data // a copy already
			break
		}
		if isNull(data) {
			break
		}
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return malformed("data", "not a JSON string, and datacontenttype is not JSON", err)
		}
		if s != "" {
			w.data = []byte(s)
		}
	}
	return w, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// isJSONMediaType reports whether ct declares JSON data: */json or */*+json.
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	_, sub, _ := strings.Cut(mt, "/")
	return sub == "json" || strings.HasSuffix(sub, "+json")
}

// validAttrName reports whether name is a CloudEvents attribute name: lower-case ASCII
// letters and digits.
func validAttrName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// encodeHeaderValue percent-encodes s as the CloudEvents NATS and HTTP bindings prescribe:
// space, double quote, percent and every byte outside printable ASCII (U+0021-U+007E) become
// %XX (upper-case hex) of their UTF-8 bytes.
func encodeHeaderValue(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if mustEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if mustEscape(c) {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func mustEscape(c byte) bool {
	return c <= ' ' || c >= 0x7f || c == '"' || c == '%'
}

var (
	errBadQuoting = errors.New("bad double-quoted string")
	errBadPercent = errors.New("bad percent-encoding")
	errBadUTF8    = errors.New("percent-decodes to invalid UTF-8")
)

// decodeHeaderValue undoes encodeHeaderValue as the bindings prescribe: optional white space
// is trimmed, a double-quoted value is unquoted (backslash escapes), then one round of
// percent-decoding (either hex case) is done, and the result must be valid UTF-8.
func decodeHeaderValue(v string) (string, error) {
	v = trimOWS(v)
	if strings.HasPrefix(v, `"`) {
		u, err := unquote(v)
		if err != nil {
			return "", err
		}
		v = u
	}
	if strings.IndexByte(v, '%') >= 0 {
		b := make([]byte, 0, len(v))
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c != '%' {
				b = append(b, c)
				continue
			}
			if i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2]) {
				return "", errBadPercent
			}
			b = append(b, unhex(v[i+1])<<4|unhex(v[i+2]))
			i += 2
		}
		v = string(b)
	}
	if !utf8.ValidString(v) {
		return "", errBadUTF8
	}
	return v, nil
}

// unquote removes the quotes and backslash escapes of an RFC 7230 quoted-string that is the
// whole of v.
func unquote(v string) (string, error) {
	if len(v) < 2 || v[len(v)-1] != '"' {
		return "", errBadQuoting
	}
	in := v[1 : len(v)-1]
	b := make([]byte, 0, len(in))
	for i := 0; i < len(in); i++ {
		switch c := in[i]; c {
		case '\\':
			if i+1 >= len(in) {
				return "", errBadQuoting
			}
			i++
			b = append(b, in[i])
		case '"':
			return "", errBadQuoting
		default:
			b = append(b, c)
		}
	}
	return string(b), nil
}

func trimOWS(s string) string { return strings.Trim(s, " \t") }

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
