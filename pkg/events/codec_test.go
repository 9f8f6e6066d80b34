package events_test

import (
	"encoding/json"
	"maps"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/events"
)

func allEvents(t *testing.T) []*events.Event {
	req, stored, completed := chain(t)
	return []*events.Event{req, claimChecked(t), stored, completed}
}

func TestMsgBinaryRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range allEvents(t) {
		t.Run(e.Type, func(t *testing.T) {
			m, err := e.Msg(e.ID)
			if err != nil {
				t.Fatalf("Msg: %v", err)
			}
			wantSubject, _ := events.SubjectFor(e.Type, e.ID)
			if m.Subject != wantSubject {
				t.Errorf("subject: got %q, want %q", m.Subject, wantSubject)
			}
			for h, want := range map[string]string{
				"ce-specversion":     "1.0",
				"ce-id":              e.ID,
				"ce-type":            e.Type,
				"ce-source":          e.Source,
				"ce-owner":           e.Owner,
				"ce-subject":         e.Subject,
				"ce-time":            "2025-01-02T03:04:05.123456Z",
				"ce-datacontenttype": e.ContentType,
				"ce-sha256":          e.SHA256,
				"ce-dataref":         e.DataRef,
				"Nats-Msg-Id":        e.ID,
			} {
				if got := m.Header.Get(h); got != want {
					t.Errorf("header %s: got %q, want %q", h, got, want)
				}
			}
			if _, ok := m.Header["Content-Type"]; ok {
				t.Errorf("binary mode sets Content-Type, want ce-datacontenttype only")
			}
			if string(m.Data) != string(e.Data) {
				t.Errorf("body: got %q, want %q", m.Data, e.Data)
			}
			got, err := events.Decode(m.Subject, m.Header, m.Data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := equalEvents(got, e); d != "" {
				t.Error(d)
			}
		})
	}
}

func TestMsgWithoutMsgID(t *testing.T) {
	t.Parallel()
	req, _, _ := chain(t)
	m, err := req.Msg("")
	if err != nil {
		t.Fatalf("Msg: %v", err)
	}
	if _, ok := m.Header[events.HeaderMsgID]; ok {
		t.Errorf("Nats-Msg-Id set, want omitted")
	}
	_, err = req.Msg("bad id\r\n")
	wantInvalid(t, err, events.ReasonInvalid, events.HeaderMsgID)

	req.SHA256 = "bad"
	_, err = req.Msg("x")
	wantInvalid(t, err, events.ReasonInvalid, "sha256")
}

func TestStructuredRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range allEvents(t) {
		t.Run(e.Type, func(t *testing.T) {
			ce, err := e.CloudEvent()
			if err != nil {
				t.Fatalf("CloudEvent: %v", err)
			}
			body, err := json.Marshal(ce) // sdk-go's JSON event format
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			switch {
			case e.Type == events.TypeRequested && e.DataRef == "" && !strings.Contains(string(body), `"data_base64":`):
				t.Errorf("requested inline bytes not in data_base64: %s", body)
			case e.Type != events.TypeRequested && !strings.Contains(string(body), `"data":{`):
				t.Errorf("JSON payload not in data: %s", body)
			}
			h := nats.Header{"Content-Type": {"application/cloudevents+json; charset=utf-8"}}
			subject, _ := events.SubjectFor(e.Type, e.ID)
			got, err := events.Decode(subject, h, body)
			if err != nil {
				t.Fatalf("Decode: %v\n%s", err, body)
			}
			if d := equalEvents(got, e); d != "" {
				t.Error(d)
			}
			// The released 1.0.2 binding: no headers at all, the body is the JSON event.
			got, err = events.Decode(subject, nil, body)
			if err != nil {
				t.Fatalf("Decode without headers: %v", err)
			}
			if d := equalEvents(got, e); d != "" {
				t.Errorf("without headers: %s", d)
			}
		})
	}
}

func TestCloudEventRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range allEvents(t) {
		ce, err := e.CloudEvent()
		if err != nil {
			t.Fatalf("%s: CloudEvent: %v", e.Type, err)
		}
		if err := ce.Validate(); err != nil {
			t.Errorf("%s: sdk-go validation: %v", e.Type, err)
		}
		got, err := events.FromCloudEvent(ce)
		if err != nil {
			t.Fatalf("%s: FromCloudEvent: %v", e.Type, err)
		}
		if d := equalEvents(got, e); d != "" {
			t.Errorf("%s: %s", e.Type, d)
		}
	}
}

func TestFromCloudEventErrors(t *testing.T) {
	t.Parallel()
	req, _, _ := chain(t)
	base := func() event.Event {
		ce, err := req.CloudEvent()
		if err != nil {
			t.Fatal(err)
		}
		return ce
	}
	ce := base()
	ce.SetSpecVersion("0.3")
	_, err := events.FromCloudEvent(ce)
	wantInvalid(t, err, events.ReasonMalformed, "specversion")

	ce = base()
	ce.SetExtension("sha256", 42)
	_, err = events.FromCloudEvent(ce)
	wantInvalid(t, err, events.ReasonInvalid, "sha256")

	ce = base()
	ce.SetExtension("owner", 42)
	_, err = events.FromCloudEvent(ce)
	wantInvalid(t, err, events.ReasonInvalid, "owner")

	ce = base()
	ce.SetExtension("owner", nil) // removes it: the source owns the subject
	if e, err := events.FromCloudEvent(ce); err != nil || e.Owner != req.Source {
		t.Errorf("FromCloudEvent without owner: got %v, %v; want owner %q", e, err, req.Source)
	}

	ce = base()
	ce.SetType("other")
	_, err = events.FromCloudEvent(ce)
	wantInvalid(t, err, events.ReasonUnknownType, "type")

	_, err = events.FromCloudEvent(event.Event{})
	wantInvalid(t, err, events.ReasonMalformed, "specversion")
}

func TestStructuredDataForms(t *testing.T) {
	t.Parallel()
	_, stored, _ := chain(t)
	ct := nats.Header{"content-type": {"Application/CloudEvents+JSON"}}
	tests := []struct {
		name    string
		subject string
		body    string
		check   func(t *testing.T, e *events.Event)
	}{
		{
			name:    "text data as a JSON string",
			subject: events.RequestedSubject(testID),
			body: `{"specversion":"1.0","id":"` + testID + `","source":"/s","type":"` + events.TypeRequested + `",
				"subject":"users/42","time":"2025-01-02T05:04:05+02:00","datacontenttype":"text/plain",
				"sha256":"` + helloSHA + `","data":"hello","dataschema":null,"dataref":null,"partitionkey":"users-42","count":5}`,
			check: func(t *testing.T, e *events.Event) {
				if string(e.Data) != "hello" || e.ContentType != "text/plain" || e.DataRef != "" {
					t.Errorf("got data %q type %q dataref %q", e.Data, e.ContentType, e.DataRef)
				}
				if !e.Time.Equal(testTime.Truncate(1e9)) || e.Time.Location().String() != "UTC" {
					t.Errorf("time: got %v, want %v in UTC", e.Time, testTime.Truncate(1e9))
				}
			},
		},
		{
			name:    "JSON data without datacontenttype is application/json",
			subject: events.BlobStoredSubject(testID),
			body: `{"specversion":"1.0","id":"` + testID + `","source":"/s","type":"` + events.TypeBlobStored + `",
				"subject":"users/42","time":"2025-01-02T03:04:05Z","sha256":"` + helloSHA + `",
				"data": ` + string(stored.Data) + `}`,
			check: func(t *testing.T, e *events.Event) {
				if e.ContentType != "application/json" || *e.Blob != *stored.Blob {
					t.Errorf("got type %q blob %+v, want application/json %+v", e.ContentType, e.Blob, stored.Blob)
				}
			},
		},
		{
			name:    "JSON data of a +json requested event stays JSON text",
			subject: events.RequestedSubject(testID),
			body: `{"specversion":"1.0","id":"` + testID + `","source":"/s","type":"` + events.TypeRequested + `",
				"subject":"users/42","time":"2025-01-02T03:04:05Z","sha256":"` + helloSHA + `",
				"datacontenttype":"application/ld+json","data":"hello"}`,
			check: func(t *testing.T, e *events.Event) {
				if string(e.Data) != `"hello"` {
					t.Errorf("got data %q, want the JSON string with its quotes", e.Data)
				}
			},
		},
		{
			name:    "claim check without data",
			subject: events.RequestedSubject(testID),
			body: `{"specversion":"1.0","id":"` + testID + `","source":"/s","type":"` + events.TypeRequested + `",
				"subject":"users/42","time":"2025-01-02T03:04:05Z","sha256":"` + helloSHA + `",
				"datacontenttype":"image/png","dataref":"nats://objects/x"}`,
			check: func(t *testing.T, e *events.Event) {
				if e.Data != nil || e.DataRef != "nats://objects/x" {
					t.Errorf("got data %q dataref %q", e.Data, e.DataRef)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := events.Decode(tt.subject, ct, []byte(tt.body))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			tt.check(t, e)
		})
	}
}

func TestPercentEncoding(t *testing.T) {
	t.Parallel()
	tests := []struct{ subject, header string }{
		{"Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"}, // the binding's example
		{`users/42 "avatar" 100%`, "users/42%20%22avatar%22%20100%25"},
		{"users/ünïcødé/☃", "users/%C3%BCn%C3%AFc%C3%B8d%C3%A9/%E2%98%83"},
		{"a+b=c&d?e#f:g;h,i'j(k)l", "a+b=c&d?e#f:g;h,i'j(k)l"},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			t.Parallel()
			e, _, _ := chain(t)
			e.Subject = tt.subject
			m, err := e.Msg("")
			if err != nil {
				t.Fatalf("Msg: %v", err)
			}
			if got := m.Header.Get("ce-subject"); got != tt.header {
				t.Errorf("ce-subject: got %q, want %q", got, tt.header)
			}
			got, err := events.Decode(m.Subject, m.Header, m.Data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.Subject != tt.subject {
				t.Errorf("subject: got %q, want %q", got.Subject, tt.subject)
			}
		})
	}
}

func TestDecodeHeaderValueForms(t *testing.T) {
	t.Parallel()
	for value, want := range map[string]string{
		"users%2f42%20%c3%a9":        "users/42 é", // lower-case hex
		"%75sers/42":                 "users/42",   // unnecessarily encoded
		`"users/42 avatar"`:          "users/42 avatar",
		`"users/\"42\" \\ x%20y"`:    `users/"42" \ x y`,
		"  users/42\t":               "users/42", // optional white space
		"users/42 raw space":         "users/42 raw space",
		"users/\u00e9 raw non-ASCII": "users/é raw non-ASCII",
	} {
		t.Run(value, func(t *testing.T) {
			t.Parallel()
			e, _, _ := chain(t)
			m, err := e.Msg("")
			if err != nil {
				t.Fatal(err)
			}
			m.Header.Set("ce-subject", value)
			got, err := events.Decode(m.Subject, m.Header, m.Data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.Subject != want {
				t.Errorf("got %q, want %q", got.Subject, want)
			}
		})
	}
}

func TestDecodeHeaderCase(t *testing.T) {
	t.Parallel()
	for name, rename := range map[string]func(string) string{
		"canonical":  textproto.CanonicalMIMEHeaderKey, // Ce-Id, Ce-Datacontenttype, ...
		"upper case": strings.ToUpper,                  // CE-ID
		"mixed":      func(k string) string { return strings.Replace(k, "ce-", "cE-", 1) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, e := range allEvents(t) {
				m, err := e.Msg(e.ID)
				if err != nil {
					t.Fatal(err)
				}
				h := nats.Header{}
				for k, v := range m.Header {
					h[rename(k)] = v
				}
				got, err := events.Decode(m.Subject, h, m.Data)
				if err != nil {
					t.Fatalf("%s: Decode: %v", e.Type, err)
				}
				if d := equalEvents(got, e); d != "" {
					t.Errorf("%s: %s", e.Type, d)
				}
			}
		})
	}
}

func TestDecodeContentTypeHeader(t *testing.T) {
	t.Parallel()
	e, _, _ := chain(t)
	m, err := e.Msg("")
	if err != nil {
		t.Fatal(err)
	}
	base := maps.Clone(m.Header)
	delete(base, "ce-datacontenttype")

	for _, key := range []string{"Content-Type", "content-type", "CONTENT-TYPE"} {
		h := maps.Clone(base)
		h.Set(key, "text/plain")
		got, err := events.Decode(m.Subject, h, m.Data)
		if err != nil {
			t.Fatalf("%s: Decode: %v", key, err)
		}
		if got.ContentType != "text/plain" {
			t.Errorf("%s: got %q, want text/plain", key, got.ContentType)
		}
	}

	h := maps.Clone(m.Header)
	h.Set("Content-Type", "text/plain")
	if _, err := events.Decode(m.Subject, h, m.Data); err != nil {
		t.Errorf("agreeing Content-Type and ce-datacontenttype: got %v, want nil", err)
	}
}

func TestDecodeIgnoresNonAttributeHeaders(t *testing.T) {
	t.Parallel()
	_, stored, _ := chain(t)
	m, err := stored.Msg("blobwriter/UPLOADS/7")
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Set("ce-partitionkey", "users-42") // an extension blobref does not know
	m.Header.Set("Nats-Expected-Stream", "UPLOADS")
	m.Header.Set(events.HeaderDeadReason, "conflict")
	got, err := events.Decode(m.Subject, m.Header, m.Data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if d := equalEvents(got, stored); d != "" {
		t.Error(d)
	}
}

func TestDecodeCopiesInput(t *testing.T) {
	t.Parallel()
	e, _, _ := chain(t)
	m, err := e.Msg("")
	if err != nil {
		t.Fatal(err)
	}
	body := slices.Clone(m.Data)
	got, err := events.Decode(m.Subject, m.Header, body)
	if err != nil {
		t.Fatal(err)
	}
	body[0] = 'X'
	if string(got.Data) != "hello" {
		t.Errorf("Decode kept a reference to its input: data %q", got.Data)
	}
}

// binaryCase is a Decode error case on a binary message.
type binaryCase struct {
	name    string
	base    string // as in baseEvent
	mutate  func(subject *string, h nats.Header, body *[]byte)
	opts    []events.DecodeOption
	reason  string
	attr    string
	wantErr bool
}

func TestDecodeBinaryErrors(t *testing.T) {
	t.Parallel()
	set := func(k, v string) func(*string, nats.Header, *[]byte) {
		return func(_ *string, h nats.Header, _ *[]byte) { h.Set(k, v) }
	}
	del := func(k string) func(*string, nats.Header, *[]byte) {
		return func(_ *string, h nats.Header, _ *[]byte) { delete(h, k) }
	}
	subj := func(s string) func(*string, nats.Header, *[]byte) {
		return func(subject *string, _ nats.Header, _ *[]byte) { *subject = s }
	}
	traced := func(state string) func(*string, nats.Header, *[]byte) {
		return func(_ *string, h nats.Header, _ *[]byte) {
			h.Set("ce-traceparent", testTraceParent)
			h.Set("ce-tracestate", state)
		}
	}
	tests := []binaryCase{
		{name: "no headers is structured mode", mutate: func(_ *string, h nats.Header, _ *[]byte) { clear(h) }, reason: events.ReasonMalformed, attr: ""},
		{name: "only Nats-Msg-Id", mutate: func(_ *string, h nats.Header, body *[]byte) {
			clear(h)
			h.Set("Nats-Msg-Id", "x")
			*body = []byte(`{"id":"x"}`)
		}, reason: events.ReasonMalformed, attr: "specversion"},
		{name: "specversion missing", mutate: del("ce-specversion"), reason: events.ReasonMalformed, attr: "specversion"},
		{name: "specversion 0.3", mutate: set("ce-specversion", "0.3"), reason: events.ReasonMalformed, attr: "specversion"},
		{name: "id missing", mutate: del("ce-id"), reason: events.ReasonMalformed, attr: "id"},
		{name: "id empty", mutate: set("ce-id", ""), reason: events.ReasonMalformed, attr: "id"},
		{name: "source missing", mutate: del("ce-source"), reason: events.ReasonMalformed, attr: "source"},
		{name: "type missing", mutate: del("ce-type"), reason: events.ReasonMalformed, attr: "type"},
		{name: "type unknown", mutate: set("ce-type", "com.example.x"), reason: events.ReasonUnknownType, attr: "type"},
		{name: "id not token-safe", mutate: set("ce-id", "a.b"), reason: events.ReasonInvalid, attr: "id"},
		{name: "id not the subject token", mutate: subj(events.RequestedSubject("other")), reason: events.ReasonInvalid, attr: "id"},
		{name: "subject with extra token", mutate: subj("uploads.requested.x." + testID), reason: events.ReasonInvalid, attr: "id"},
		{name: "type does not match subject kind", mutate: subj(events.CompletedSubject(testID)), reason: events.ReasonInvalid, attr: "type"},
		{name: "blob_stored on requested subject", base: "blob_stored", mutate: subj(events.RequestedSubject(testID)), reason: events.ReasonInvalid, attr: "type"},
		{name: "completed on blob subject", base: "completed", mutate: subj(events.BlobStoredSubject(testID)), reason: events.ReasonInvalid, attr: "type"},
		{name: "not an upload subject", mutate: subj("dlq.uploads.requested." + testID), reason: events.ReasonInvalid, attr: "type"},
		{name: "empty subject", mutate: subj(""), reason: events.ReasonInvalid, attr: "type"},
		{name: "bad percent-encoding", mutate: set("ce-subject", "users%zz"), reason: events.ReasonMalformed, attr: "ce-subject"},
		{name: "truncated percent-encoding", mutate: set("ce-subject", "users%4"), reason: events.ReasonMalformed, attr: "ce-subject"},
		{name: "overlong UTF-8", mutate: set("ce-subject", "users%C0%A0"), reason: events.ReasonMalformed, attr: "ce-subject"},
		{name: "invalid UTF-8", mutate: set("ce-source", "/s%FF"), reason: events.ReasonMalformed, attr: "ce-source"},
		{name: "unterminated quotes", mutate: set("ce-subject", `"users/42`), reason: events.ReasonMalformed, attr: "ce-subject"},
		{name: "quote inside quotes", mutate: set("ce-subject", `"a"b"`), reason: events.ReasonMalformed, attr: "ce-subject"},
		{name: "bad header name", mutate: set("ce-foo_bar", "x"), reason: events.ReasonMalformed, attr: "ce-foo_bar"},
		{name: "empty attribute name", mutate: set("ce-", "x"), reason: events.ReasonMalformed, attr: "ce-"},
		{name: "data is not an attribute", mutate: set("ce-data", "x"), reason: events.ReasonMalformed, attr: "ce-data"},
		{name: "attribute twice by case", mutate: set("Ce-Id", testID), reason: events.ReasonMalformed, attr: "id"},
		{name: "attribute with two values", mutate: func(_ *string, h nats.Header, _ *[]byte) { h.Add("ce-id", testID) }, reason: events.ReasonMalformed, attr: "id"},
		{name: "Content-Type disagrees", mutate: set("Content-Type", "image/png"), reason: events.ReasonMalformed, attr: "datacontenttype"},
		{name: "Content-Type twice", mutate: func(_ *string, h nats.Header, _ *[]byte) {
			h.Set("Content-Type", "text/plain")
			h.Set("content-type", "text/plain")
		}, reason: events.ReasonMalformed, attr: "Content-Type"},
		{name: "batch format", mutate: set("Content-Type", "application/cloudevents-batch+json"), reason: events.ReasonMalformed, attr: "Content-Type"},
		{name: "other event format", mutate: set("Content-Type", "application/cloudevents+avro"), reason: events.ReasonMalformed, attr: "Content-Type"},
		{name: "unparsable structured type", mutate: set("Content-Type", "application/cloudevents+json; ="), reason: events.ReasonMalformed, attr: "Content-Type"},
		{name: "time missing", mutate: del("ce-time"), reason: events.ReasonInvalid, attr: "time"},
		{name: "time not RFC 3339", mutate: set("ce-time", "2025-01-02 03:04:05"), reason: events.ReasonInvalid, attr: "time"},
		{name: "time out of range", mutate: set("ce-time", "0000-01-01T00:00:00%2B01:00"), reason: events.ReasonInvalid, attr: "time"},
		{name: "subject missing", mutate: del("ce-subject"), reason: events.ReasonInvalid, attr: "subject"},
		{name: "subject control char", mutate: set("ce-subject", "users%0A42"), reason: events.ReasonInvalid, attr: "subject"},
		{name: "subject format char", mutate: set("ce-subject", "users/42%E2%80%8B"), reason: events.ReasonInvalid, attr: "subject"},
		{name: "subject dot-dot segment", mutate: set("ce-subject", "users/42/../43"), reason: events.ReasonInvalid, attr: "subject"},
		{name: "owner empty", mutate: set("ce-owner", ""), reason: events.ReasonInvalid, attr: "owner"},
		{name: "owner format char", mutate: set("ce-owner", "ali%E2%80%AEce"), reason: events.ReasonInvalid, attr: "owner"},
		{name: "owner too long", mutate: set("ce-owner", strings.Repeat("o", events.MaxOwnerLen+1)), reason: events.ReasonInvalid, attr: "owner"},
		{name: "owner missing and source too long", mutate: func(_ *string, h nats.Header, _ *[]byte) {
			delete(h, "ce-owner")
			h.Set("ce-source", "/"+strings.Repeat("s", events.MaxOwnerLen))
		}, reason: events.ReasonInvalid, attr: "owner"},
		{name: "completed reference of another owner", base: "completed", mutate: set("ce-owner", "mallory"), reason: events.ReasonInvalid, attr: "data"},
		{name: "datacontenttype too long", mutate: set("ce-datacontenttype", "text/plain;x="+strings.Repeat("y", events.MaxContentTypeLen)), reason: events.ReasonInvalid, attr: "datacontenttype"},
		{name: "sha256 missing", mutate: del("ce-sha256"), reason: events.ReasonInvalid, attr: "sha256"},
		{name: "sha256 upper case", mutate: set("ce-sha256", strings.ToUpper(helloSHA)), reason: events.ReasonInvalid, attr: "sha256"},
		{name: "datacontenttype missing", mutate: del("ce-datacontenttype"), reason: events.ReasonInvalid, attr: "datacontenttype"},
		{name: "datacontenttype bad", mutate: set("ce-datacontenttype", "text"), reason: events.ReasonInvalid, attr: "datacontenttype"},
		{name: "no data no dataref", mutate: func(_ *string, _ nats.Header, body *[]byte) { *body = nil }, reason: events.ReasonInvalid, attr: "data"},
		{name: "data and dataref", mutate: set("ce-dataref", "nats://objects/x"), reason: events.ReasonInvalid, attr: "data"},
		{name: "dataref without scheme", base: "dataref", mutate: set("ce-dataref", "objects/x"), reason: events.ReasonInvalid, attr: "dataref"},
		{name: "too large", opts: []events.DecodeOption{events.WithMaxInlineSize(4)}, mutate: func(*string, nats.Header, *[]byte) {}, reason: events.ReasonTooLarge, attr: "data"},
		{name: "blob_stored bad payload", base: "blob_stored", mutate: func(_ *string, _ nats.Header, body *[]byte) { *body = []byte(`{"key":`) }, reason: events.ReasonInvalid, attr: "data"},
		{name: "blob_stored dataref", base: "blob_stored", mutate: set("ce-dataref", "nats://objects/x"), reason: events.ReasonInvalid, attr: "dataref"},
		{name: "blob_stored text", base: "blob_stored", mutate: set("ce-datacontenttype", "text/plain"), reason: events.ReasonInvalid, attr: "datacontenttype"},
		{name: "traceparent short", mutate: set("ce-traceparent", "00-abc"), reason: events.ReasonInvalid, attr: "traceparent"},
		{name: "traceparent upper case", mutate: set("ce-traceparent", strings.ToUpper(testTraceParent)), reason: events.ReasonInvalid, attr: "traceparent"},
		{name: "traceparent zero trace id", mutate: set("ce-traceparent", "00-"+strings.Repeat("0", 32)+"-00f067aa0ba902b7-01"), reason: events.ReasonInvalid, attr: "traceparent"},
		{name: "traceparent zero parent id", mutate: set("ce-traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-"+strings.Repeat("0", 16)+"-01"), reason: events.ReasonInvalid, attr: "traceparent"},
		{name: "traceparent version ff", mutate: set("ce-traceparent", "ff"+testTraceParent[2:]), reason: events.ReasonInvalid, attr: "traceparent"},
		{name: "traceparent 00 with more", mutate: set("ce-traceparent", testTraceParent+"-x"), reason: events.ReasonInvalid, attr: "traceparent"},
		{name: "traceparent empty", mutate: set("ce-traceparent", ""), reason: events.ReasonInvalid, attr: "traceparent"},
		{name: "tracestate without traceparent", mutate: set("ce-tracestate", "k=v"), reason: events.ReasonInvalid, attr: "tracestate"},
		{name: "tracestate too long", mutate: traced("k=" + strings.Repeat("v", events.MaxTraceStateLen)), reason: events.ReasonInvalid, attr: "tracestate"},
		{name: "tracestate not key=value", mutate: traced("k=v,oops"), reason: events.ReasonInvalid, attr: "tracestate"},
		{name: "tracestate control character", mutate: traced("k=v%0A"), reason: events.ReasonInvalid, attr: "tracestate"},
		{name: "tracestate 33 members", mutate: traced(strings.Repeat("k=v,", 32) + "k=v"), reason: events.ReasonInvalid, attr: "tracestate"},
		{name: "completed sha256 differs from blob", base: "completed", mutate: set("ce-sha256", strings.Repeat("b", 64)), reason: events.ReasonInvalid, attr: "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := tt.base
			if base == "" {
				base = "requested"
			}
			e := baseEvent(t, base)
			m, err := e.Msg(e.ID)
			if err != nil {
				t.Fatal(err)
			}
			subject, body := m.Subject, m.Data
			tt.mutate(&subject, m.Header, &body)
			got, err := events.Decode(subject, m.Header, body, tt.opts...)
			if got != nil {
				t.Errorf("got an event with an error")
			}
			wantInvalid(t, err, tt.reason, tt.attr)
		})
	}
}

func TestDecodeStructuredErrors(t *testing.T) {
	t.Parallel()
	ct := nats.Header{"Content-Type": {"application/cloudevents+json"}}
	valid := map[string]any{
		"specversion": "1.0", "id": testID, "source": "/s", "type": events.TypeRequested,
		"subject": "users/42", "time": "2025-01-02T03:04:05Z", "datacontenttype": "text/plain",
		"sha256": helloSHA, "data_base64": "aGVsbG8=",
	}
	with := func(kv ...any) string {
		m := maps.Clone(valid)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return toJSON(m)
	}
	// The valid body decodes.
	if _, err := events.Decode(events.RequestedSubject(testID), ct, []byte(with())); err != nil {
		t.Fatalf("valid structured event: %v", err)
	}
	tests := []struct {
		name, body, reason, attr string
	}{
		{"empty body", "", events.ReasonMalformed, ""},
		{"not JSON", "hello", events.ReasonMalformed, ""},
		{"not an object", `["specversion"]`, events.ReasonMalformed, ""},
		{"truncated", with()[:40], events.ReasonMalformed, ""},
		{"trailing data", with() + " {}", events.ReasonMalformed, ""},
		{"duplicate member", strings.Replace(with(), `"id":`, `"id":"x","id":`, 1), events.ReasonMalformed, "id"},
		{"specversion missing", with("specversion", nil), events.ReasonMalformed, "specversion"},
		{"specversion number", with("specversion", 1.0), events.ReasonMalformed, "specversion"},
		{"id missing", with("id", nil), events.ReasonMalformed, "id"},
		{"id number", with("id", 7), events.ReasonMalformed, "id"},
		{"source missing", with("source", nil), events.ReasonMalformed, "source"},
		{"attribute name upper case", with("Foo", "x"), events.ReasonMalformed, "Foo"},
		{"data and data_base64", with("data", "hello"), events.ReasonMalformed, "data"},
		{"data_base64 not base64", with("data_base64", "!!!"), events.ReasonMalformed, "data_base64"},
		{"data_base64 not a string", with("data_base64", 5), events.ReasonMalformed, "data_base64"},
		{"text data not a string", with("data_base64", nil, "data", map[string]any{"a": 1}), events.ReasonMalformed, "data"},
		{"sha256 not a string", with("sha256", 5), events.ReasonInvalid, "sha256"},
		{"owner not a string", with("owner", 5), events.ReasonInvalid, "owner"},
		{"owner empty", with("owner", ""), events.ReasonInvalid, "owner"},
		{"traceparent not a string", with("traceparent", 5), events.ReasonInvalid, "traceparent"},
		{"traceparent bad", with("traceparent", "00-x"), events.ReasonInvalid, "traceparent"},
		{"tracestate not a string", with("traceparent", testTraceParent, "tracestate", true), events.ReasonInvalid, "tracestate"},
		{"type unknown", with("type", "x.y"), events.ReasonUnknownType, "type"},
		{"time missing", with("time", nil), events.ReasonInvalid, "time"},
		{"time not a string", with("time", 5), events.ReasonMalformed, "time"},
		{"no data", with("data_base64", nil), events.ReasonInvalid, "data"},
		{"too large", with("data_base64", strings.Repeat("QUFB", events.DefaultMaxInlineSize/3+1)), events.ReasonTooLarge, "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := events.Decode(events.RequestedSubject(testID), ct, []byte(tt.body))
			wantInvalid(t, err, tt.reason, tt.attr)
		})
	}
}
