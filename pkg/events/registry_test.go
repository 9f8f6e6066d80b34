package events_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/blobref/blobref/pkg/events"
)

// typeScanned is a type another team's service declares: a virus scan's verdict on an upload,
// published after its blob is stored. Declaring it is all it takes for the package to build,
// route, encode, decode and validate its events.
const typeScanned = "io.example.upload.scanned.v1"

type verdict struct {
	Clean bool   `json:"clean"`
	Virus string `json:"virus,omitempty"`
}

func init() {
	events.MustRegister(events.EventType{
		Type:          typeScanned,
		SubjectPrefix: "uploads.scanned.",
		ContentType:   "application/json",
		Follows:       events.TypeBlobStored,
		Check: func(e *events.Event) error {
			var v verdict
			if err := json.Unmarshal(e.Data, &v); err != nil {
				return events.Invalid("data", "not a JSON verdict")
			}
			if v.Clean == (v.Virus != "") {
				return events.Invalid("data", "a verdict is clean or names its virus")
			}
			return nil
		},
	})
}

func TestRegisteredTypeTravelsLikeTheBuiltInOnes(t *testing.T) {
	t.Parallel()
	_, stored, _ := chain(t)
	e, err := events.Follow(stored, typeScanned, "/example/scanner", []byte(`{"clean":true}`))
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if e.ID != stored.ID || e.Owner != stored.Owner || e.Subject != stored.Subject || !e.Time.Equal(stored.Time) ||
		e.SHA256 != stored.SHA256 || e.ContentType != "application/json" || e.Blob != nil || e.Ref != nil {
		t.Errorf("Follow: got %+v, want blob_stored's id, owner, subject, time and sha256, application/json and no typed payload", e)
	}
	msg, err := e.Msg("scan-1")
	if err != nil {
		t.Fatalf("Msg: %v", err)
	}
	if want := "uploads.scanned." + testID; msg.Subject != want {
		t.Errorf("subject: got %q, want %q", msg.Subject, want)
	}
	got, err := events.Decode(msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if d := equalEvents(got, e); d != "" {
		t.Errorf("decoded event differs: %s", d)
	}
	ce, err := e.CloudEvent()
	if err != nil {
		t.Fatalf("CloudEvent: %v", err)
	}
	if back, err := events.FromCloudEvent(ce); err != nil || string(back.Data) != `{"clean":true}` {
		t.Errorf("FromCloudEvent: got %v, %v; want the JSON data back", back, err)
	}
	if typ, ok := events.Lookup(typeScanned); !ok || typ.Filter() != "uploads.scanned.>" {
		t.Errorf("Lookup: got %+v, %v; want the declaration with filter uploads.scanned.>", typ, ok)
	}
}

func TestRegisteredTypeIsChecked(t *testing.T) {
	t.Parallel()
	req, stored, _ := chain(t)
	_, err := events.Follow(stored, typeScanned, "/example/scanner", []byte(`{"clean":true,"virus":"eicar"}`))
	wantInvalid(t, err, events.ReasonInvalid, "data")
	_, err = events.Follow(req, typeScanned, "/example/scanner", []byte(`{"clean":true}`))
	wantInvalid(t, err, events.ReasonInvalid, "type")

	e, err := events.Follow(stored, typeScanned, "/example/scanner", []byte(`{"virus":"eicar"}`))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := e.Msg("")
	if err != nil {
		t.Fatal(err)
	}
	// On the subjects of another type, or with data its Check refuses, it is refused.
	_, err = events.Decode(events.CompletedSubject(testID), msg.Header, msg.Data)
	wantInvalid(t, err, events.ReasonInvalid, "type")
	_, err = events.Decode(msg.Subject, msg.Header, []byte(`{"clean":false}`))
	wantInvalid(t, err, events.ReasonInvalid, "data")
	e.DataRef = "nats-object://b/x"
	wantInvalid(t, e.Validate(0), events.ReasonInvalid, "dataref")
}

func TestRegisterRefusesClashingDeclarations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		t    events.EventType
		want string
	}{
		{"no type", events.EventType{SubjectPrefix: "uploads.x1."}, "no type"},
		{"declared twice", events.EventType{Type: events.TypeCompleted, SubjectPrefix: "uploads.x2."}, "already declared"},
		{"outside the stream", events.EventType{Type: "t3", SubjectPrefix: "orders.x3."}, "is not"},
		{"no trailing dot", events.EventType{Type: "t4", SubjectPrefix: "uploads.x4"}, "is not"},
		{"wildcard", events.EventType{Type: "t5", SubjectPrefix: "uploads.*."}, "token"},
		{"same subjects", events.EventType{Type: "t6", SubjectPrefix: "uploads.completed."}, "overlap"},
		{"under another's", events.EventType{Type: "t7", SubjectPrefix: "uploads.blob.stored.late."}, "overlap"},
		{"over another's", events.EventType{Type: "t8", SubjectPrefix: "uploads.blob."}, "overlap"},
		{"media type with parameters", events.EventType{Type: "t9", SubjectPrefix: "uploads.x9.", ContentType: "text/plain; charset=utf-8"}, "media type"},
		{"dataref of a payload", events.EventType{Type: "t10", SubjectPrefix: "uploads.x10.", ContentType: "application/json", DataRef: true}, "DataRef"},
		{"follows nothing declared", events.EventType{Type: "t11", SubjectPrefix: "uploads.x11.", Follows: "io.example.none"}, "not declared"},
	} {
		err := events.Register(tc.t)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.want)
		}
		if _, ok := events.Lookup(tc.t.Type); ok && tc.t.Type != events.TypeCompleted {
			t.Errorf("%s: declared although refused", tc.name)
		}
	}
}

func TestBuiltInTypesAreDeclared(t *testing.T) {
	t.Parallel()
	for typ, filter := range map[string]string{
		events.TypeRequested:  events.BlobWriterConsumer.FilterSubject,
		events.TypeBlobStored: events.RefWriterConsumer.FilterSubject,
		events.TypeCompleted:  "uploads.completed.>",
	} {
		decl, ok := events.Lookup(typ)
		if !ok || decl.Filter() != filter {
			t.Errorf("%s: got %+v, %v; want a declaration with filter %s", typ, decl, ok, filter)
		}
	}
	if f := events.BlobWriterConsumer.FilterSubject; f != "uploads.requested.>" {
		t.Errorf("blobwriter's filter: got %q, want uploads.requested.>", f)
	}
	if f := events.RefWriterConsumer.FilterSubject; f != "uploads.blob.stored.>" {
		t.Errorf("refwriter's filter: got %q, want uploads.blob.stored.>", f)
	}
}
