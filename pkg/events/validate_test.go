package events_test

import (
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/pkg/events"
)

func TestValidateAcceptsValidEvents(t *testing.T) {
	t.Parallel()
	req, stored, completed := chain(t)
	for _, e := range []*events.Event{req, stored, completed, claimChecked(t)} {
		if err := e.Validate(0); err != nil {
			t.Errorf("%s: got %v, want nil", e.Type, err)
		}
	}
}

func TestValidateRules(t *testing.T) {
	t.Parallel()
	otherSHA := strings.Repeat("a", 64)
	tests := []struct {
		name      string
		base      string // "requested", "dataref", "blob_stored", "completed"
		mutate    func(e *events.Event)
		maxInline int
		reason    string
		attr      string
	}{
		// Required CloudEvents attributes.
		{"id missing", "requested", func(e *events.Event) { e.ID = "" }, 0, events.ReasonMalformed, "id"},
		{"source missing", "requested", func(e *events.Event) { e.Source = "" }, 0, events.ReasonMalformed, "source"},
		{"type missing", "requested", func(e *events.Event) { e.Type = "" }, 0, events.ReasonMalformed, "type"},
		// type.
		{"type unknown", "requested", func(e *events.Event) { e.Type = "com.example.other" }, 0, events.ReasonUnknownType, "type"},
		{"type old version", "completed", func(e *events.Event) { e.Type = "io.blobref.upload.completed.v0" }, 0, events.ReasonUnknownType, "type"},
		// id.
		{"id with space", "requested", func(e *events.Event) { e.ID = "a b" }, 0, events.ReasonInvalid, "id"},
		{"id with dot", "requested", func(e *events.Event) { e.ID = "a.b" }, 0, events.ReasonInvalid, "id"},
		{"id with wildcard", "requested", func(e *events.Event) { e.ID = "a*" }, 0, events.ReasonInvalid, "id"},
		{"id too long", "requested", func(e *events.Event) { e.ID = strings.Repeat("x", 129) }, 0, events.ReasonInvalid, "id"},
		{"id non-ASCII", "blob_stored", func(e *events.Event) { e.ID = "é" }, 0, events.ReasonInvalid, "id"},
		// source.
		{"source bad URI", "requested", func(e *events.Event) { e.Source = "/a%zz" }, 0, events.ReasonInvalid, "source"},
		{"source control char", "requested", func(e *events.Event) { e.Source = "/a\x01" }, 0, events.ReasonInvalid, "source"},
		// subject.
		{"subject missing", "requested", func(e *events.Event) { e.Subject = "" }, 0, events.ReasonInvalid, "subject"},
		{"subject too long", "requested", func(e *events.Event) { e.Subject = strings.Repeat("s", 1025) }, 0, events.ReasonInvalid, "subject"},
		{"subject invalid UTF-8", "requested", func(e *events.Event) { e.Subject = "users/\xff" }, 0, events.ReasonInvalid, "subject"},
		{"subject newline", "completed", func(e *events.Event) { e.Subject = "users/42\nx" }, 0, events.ReasonInvalid, "subject"},
		{"subject NUL", "requested", func(e *events.Event) { e.Subject = "users/\x00" }, 0, events.ReasonInvalid, "subject"},
		{"subject C1 control", "requested", func(e *events.Event) { e.Subject = "users/\u0085x" }, 0, events.ReasonInvalid, "subject"},
		{"subject DEL", "requested", func(e *events.Event) { e.Subject = "users/\x7f" }, 0, events.ReasonInvalid, "subject"},
		{"subject leading space", "requested", func(e *events.Event) { e.Subject = " users/42" }, 0, events.ReasonInvalid, "subject"},
		{"subject dot-dot segment", "blob_stored", func(e *events.Event) { e.Subject = "users/42/../43" }, 0, events.ReasonInvalid, "subject"},
		{"subject zero width space", "requested", func(e *events.Event) { e.Subject = "users/42\u200b" }, 0, events.ReasonInvalid, "subject"},
		{"subject bidi override", "completed", func(e *events.Event) { e.Subject = "users/\u202e24" }, 0, events.ReasonInvalid, "subject"},
		// owner.
		{"owner missing", "requested", func(e *events.Event) { e.Owner = "" }, 0, events.ReasonInvalid, "owner"},
		{"owner too long", "blob_stored", func(e *events.Event) { e.Owner = strings.Repeat("o", events.MaxOwnerLen+1) }, 0, events.ReasonInvalid, "owner"},
		{"owner line separator", "requested", func(e *events.Event) { e.Owner = "ali\u2028ce" }, 0, events.ReasonInvalid, "owner"},
		{"owner trailing space", "requested", func(e *events.Event) { e.Owner = "alice " }, 0, events.ReasonInvalid, "owner"},
		// time.
		{"time missing", "requested", func(e *events.Event) { e.Time = time.Time{} }, 0, events.ReasonInvalid, "time"},
		{"time missing on blob_stored", "blob_stored", func(e *events.Event) { e.Time = time.Time{} }, 0, events.ReasonInvalid, "time"},
		{"time year out of range", "requested", func(e *events.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, 0, events.ReasonInvalid, "time"},
		// sha256.
		{"sha256 missing", "requested", func(e *events.Event) { e.SHA256 = "" }, 0, events.ReasonInvalid, "sha256"},
		{"sha256 upper case", "requested", func(e *events.Event) { e.SHA256 = strings.ToUpper(helloSHA) }, 0, events.ReasonInvalid, "sha256"},
		{"sha256 short", "blob_stored", func(e *events.Event) { e.SHA256 = helloSHA[:63] }, 0, events.ReasonInvalid, "sha256"},
		{"sha256 not hex", "completed", func(e *events.Event) { e.SHA256 = strings.Repeat("g", 64) }, 0, events.ReasonInvalid, "sha256"},
		// requested: datacontenttype, data, dataref.
		{"datacontenttype missing", "requested", func(e *events.Event) { e.ContentType = "" }, 0, events.ReasonInvalid, "datacontenttype"},
		{"datacontenttype not a media type", "requested", func(e *events.Event) { e.ContentType = "not a type" }, 0, events.ReasonInvalid, "datacontenttype"},
		{"datacontenttype too long", "requested", func(e *events.Event) {
			e.ContentType = "text/plain; x=" + strings.Repeat("y", events.MaxContentTypeLen)
		}, 0, events.ReasonInvalid, "datacontenttype"},
		{"data and dataref", "requested", func(e *events.Event) { e.DataRef = "nats://bucket/x" }, 0, events.ReasonInvalid, "data"},
		{"neither data nor dataref", "requested", func(e *events.Event) { e.Data = nil }, 0, events.ReasonInvalid, "data"},
		{"dataref without scheme", "dataref", func(e *events.Event) { e.DataRef = "bucket/x" }, 0, events.ReasonInvalid, "dataref"},
		{"dataref bad URI", "dataref", func(e *events.Event) { e.DataRef = "nats://bucket/%zz" }, 0, events.ReasonInvalid, "dataref"},
		{"dataref control char", "dataref", func(e *events.Event) { e.DataRef = "nats://bucket/\r" }, 0, events.ReasonInvalid, "dataref"},
		{"data too large", "requested", func(e *events.Event) {}, 4, events.ReasonTooLarge, "data"},
		{"requested with blob", "requested", func(e *events.Event) { e.Blob = &events.Blob{} }, 0, events.ReasonInvalid, "data"},
		// blob_stored.
		{"blob_stored not JSON type", "blob_stored", func(e *events.Event) { e.ContentType = "text/plain" }, 0, events.ReasonInvalid, "datacontenttype"},
		{"blob_stored dataref", "blob_stored", func(e *events.Event) { e.DataRef = "nats://bucket/x" }, 0, events.ReasonInvalid, "dataref"},
		{"blob_stored no payload", "blob_stored", func(e *events.Event) { e.Data = nil; e.Blob = nil }, 0, events.ReasonInvalid, "data"},
		{"blob_stored bad JSON", "blob_stored", func(e *events.Event) { e.Data = []byte("{"); e.Blob = nil }, 0, events.ReasonInvalid, "data"},
		{"blob_stored key missing", "blob_stored", setBlob(func(b *events.Blob) { b.Key = "" }), 0, events.ReasonInvalid, "data"},
		{"blob_stored size negative", "blob_stored", setBlob(func(b *events.Blob) { b.Size = -1 }), 0, events.ReasonInvalid, "data"},
		{"blob_stored sha256 mismatch", "blob_stored", setBlob(func(b *events.Blob) { b.SHA256 = otherSHA }), 0, events.ReasonInvalid, "data"},
		{"blob_stored Blob differs", "blob_stored", func(e *events.Event) { e.Blob = &events.Blob{Key: "other"} }, 0, events.ReasonInvalid, "data"},
		{"blob_stored with Ref", "blob_stored", func(e *events.Event) { e.Ref = &events.Reference{} }, 0, events.ReasonInvalid, "data"},
		{"blob_stored payload too large", "blob_stored", func(e *events.Event) {}, 8, events.ReasonTooLarge, "data"},
		// completed.
		{"completed not JSON type", "completed", func(e *events.Event) { e.ContentType = "application/xml" }, 0, events.ReasonInvalid, "datacontenttype"},
		{"completed bad JSON", "completed", func(e *events.Event) { e.Data = []byte(`{"id":1}`); e.Ref = nil; e.Blob = nil }, 0, events.ReasonInvalid, "data"},
		{"completed id mismatch", "completed", setRef(func(r *events.Reference) { r.ID = "other" }), 0, events.ReasonInvalid, "data"},
		{"completed sha256 mismatch", "completed", setRef(func(r *events.Reference) { r.Blob.SHA256 = otherSHA }), 0, events.ReasonInvalid, "data"},
		{"completed key missing", "completed", setRef(func(r *events.Reference) { r.Blob.Key = "" }), 0, events.ReasonInvalid, "data"},
		{"completed owner mismatch", "completed", setRef(func(r *events.Reference) { r.Owner = "mallory" }), 0, events.ReasonInvalid, "data"},
		{"completed Ref differs", "completed", func(e *events.Event) { r := *e.Ref; r.Subject = "other"; e.Ref = &r }, 0, events.ReasonInvalid, "data"},
		{"completed Blob differs", "completed", func(e *events.Event) { e.Blob = &events.Blob{Key: "other"} }, 0, events.ReasonInvalid, "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := baseEvent(t, tt.base)
			tt.mutate(e)
			wantInvalid(t, e.Validate(tt.maxInline), tt.reason, tt.attr)
		})
	}
}

func baseEvent(t *testing.T, base string) *events.Event {
	t.Helper()
	req, stored, completed := chain(t)
	switch base {
	case "requested":
		return req
	case "dataref":
		return claimChecked(t)
	case "blob_stored":
		return stored
	case "completed":
		return completed
	}
	t.Fatalf("unknown base %q", base)
	return nil
}

// setBlob changes the blob_stored payload (Data and Blob together).
func setBlob(f func(*events.Blob)) func(*events.Event) {
	return func(e *events.Event) {
		b := *e.Blob
		f(&b)
		e.Blob = &b
		e.Data = []byte(toJSON(b))
	}
}

// setRef changes the completed payload (Data, Ref and Blob together).
func setRef(f func(*events.Reference)) func(*events.Event) {
	return func(e *events.Event) {
		r := *e.Ref
		f(&r)
		e.Ref = &r
		e.Blob = &r.Blob
		e.Data = []byte(toJSON(r))
	}
}

func TestNewRequested(t *testing.T) {
	t.Parallel()
	t.Run("computes sha256 and defaults time", func(t *testing.T) {
		t.Parallel()
		before := time.Now().Add(-time.Second)
		e, err := events.NewRequested(events.Request{
			ID: testID, Source: testSource, Subject: testSubject, ContentType: "text/plain", Data: []byte("hello"),
		})
		if err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		if e.SHA256 != helloSHA {
			t.Errorf("SHA256: got %q, want %q", e.SHA256, helloSHA)
		}
		if e.Time.Before(before) || e.Time.Location() != time.UTC || e.Time.Nanosecond()%1000 != 0 {
			t.Errorf("Time: got %v, want now in UTC, whole microseconds", e.Time)
		}
		if e.Type != events.TypeRequested {
			t.Errorf("Type: got %q, want %q", e.Type, events.TypeRequested)
		}
	})
	t.Run("keeps given time in UTC", func(t *testing.T) {
		t.Parallel()
		at := time.Date(2025, 1, 2, 5, 4, 5, 7, time.FixedZone("x", 2*3600))
		e, err := events.NewRequested(events.Request{
			ID: testID, Source: testSource, Subject: testSubject, ContentType: "text/plain", Data: []byte("hello"), Time: at,
		})
		if err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		if !e.Time.Equal(at) || e.Time.Location() != time.UTC {
			t.Errorf("Time: got %v, want %v in UTC", e.Time, at)
		}
	})
	for _, tt := range []struct {
		name   string
		r      events.Request
		reason string
		attr   string
	}{
		{"sha256 mismatch", events.Request{Data: []byte("hello"), SHA256: strings.Repeat("0", 64)}, events.ReasonInvalid, "sha256"},
		{"sha256 upper case", events.Request{Data: []byte("hello"), SHA256: strings.ToUpper(helloSHA)}, events.ReasonInvalid, "sha256"},
		{"dataref without sha256", events.Request{DataRef: "nats://b/x"}, events.ReasonInvalid, "sha256"},
		{"too large inline", events.Request{Data: make([]byte, events.DefaultMaxInlineSize+1)}, events.ReasonTooLarge, "data"},
		{"bad id", events.Request{ID: "a.b", Data: []byte("x")}, events.ReasonInvalid, "id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := tt.r
			if r.ID == "" {
				r.ID = testID
			}
			r.Source, r.Subject, r.ContentType = testSource, testSubject, "text/plain"
			_, err := events.NewRequested(r)
			wantInvalid(t, err, tt.reason, tt.attr)
		})
	}
}

func TestNewBlobStoredAndCompleted(t *testing.T) {
	t.Parallel()
	req, stored, completed := chain(t)
	for _, e := range []*events.Event{stored, completed} {
		if e.ID != req.ID || e.Subject != req.Subject || !e.Time.Equal(req.Time) || e.SHA256 != req.SHA256 {
			t.Errorf("%s: id, subject, time, sha256 not copied from the request: %+v", e.Type, e)
		}
		if e.ContentType != "application/json" {
			t.Errorf("%s: ContentType: got %q, want application/json", e.Type, e.ContentType)
		}
	}
	if want := `{"key":"uploads/upl_01-ABC","size":5,"sha256":"` + helloSHA + `","contentType":"text/plain"}`; string(stored.Data) != want {
		t.Errorf("blob_stored Data: got %s, want %s", stored.Data, want)
	}
	if completed.Blob != &completed.Ref.Blob {
		t.Errorf("completed Blob does not point to Ref.Blob")
	}
	if !strings.Contains(string(completed.Data), `"eventTime":"2025-01-02T03:04:05.123456Z"`) {
		t.Errorf("completed Data: got %s, want eventTime in RFC 3339", completed.Data)
	}

	// The builders check the typed payload instead of parsing Data back:
	// the full check, which parses it, must agree.
	for _, e := range []*events.Event{stored, completed} {
		if err := e.Validate(0); err != nil {
			t.Errorf("%s built by its builder does not validate: %v", e.Type, err)
		}
	}
	t.Run("blob without key or with a negative size", func(t *testing.T) {
		t.Parallel()
		for _, mutate := range []func(*events.Blob){
			func(b *events.Blob) { b.Key = "" },
			func(b *events.Blob) { b.Size = -1 },
		} {
			b := *stored.Blob
			mutate(&b)
			_, err := events.NewBlobStored(req, b, "/x")
			wantInvalid(t, err, events.ReasonInvalid, "data")
			ref := *completed.Ref
			ref.Blob = b
			_, err = events.NewCompleted(stored, ref, "/x")
			wantInvalid(t, err, events.ReasonInvalid, "data")
		}
	})
	t.Run("wrong previous type", func(t *testing.T) {
		t.Parallel()
		_, err := events.NewBlobStored(stored, *stored.Blob, "/x")
		wantInvalid(t, err, events.ReasonInvalid, "type")
		_, err = events.NewCompleted(req, *completed.Ref, "/x")
		wantInvalid(t, err, events.ReasonInvalid, "type")
		_, err = events.NewBlobStored(nil, *stored.Blob, "/x")
		wantInvalid(t, err, events.ReasonInvalid, "type")
	})
	t.Run("digest mismatch", func(t *testing.T) {
		t.Parallel()
		b := *stored.Blob
		b.SHA256 = strings.Repeat("0", 64)
		_, err := events.NewBlobStored(req, b, "/x")
		wantInvalid(t, err, events.ReasonInvalid, "data")
	})
	t.Run("reference of another id", func(t *testing.T) {
		t.Parallel()
		ref := *completed.Ref
		ref.ID = "other"
		_, err := events.NewCompleted(stored, ref, "/x")
		wantInvalid(t, err, events.ReasonInvalid, "data")
	})
	t.Run("source missing", func(t *testing.T) {
		t.Parallel()
		_, err := events.NewBlobStored(req, *stored.Blob, "")
		wantInvalid(t, err, events.ReasonMalformed, "source")
	})
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ got, want string }{
		{events.RequestedSubject("x1"), "uploads.requested.x1"},
		{events.BlobStoredSubject("x1"), "uploads.blob.stored.x1"},
		{events.CompletedSubject("x1"), "uploads.completed.x1"},
		{events.DeadLetterSubject("uploads.requested.x1"), "dlq.uploads.requested.x1"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for typ, want := range map[string]string{
		events.TypeRequested:  "uploads.requested.x1",
		events.TypeBlobStored: "uploads.blob.stored.x1",
		events.TypeCompleted:  "uploads.completed.x1",
	} {
		got, err := events.SubjectFor(typ, "x1")
		if err != nil || got != want {
			t.Errorf("SubjectFor(%q): got %q, %v, want %q", typ, got, err, want)
		}
	}
	_, err := events.SubjectFor("other", "x1")
	wantInvalid(t, err, events.ReasonUnknownType, "type")
	_, err = events.SubjectFor(events.TypeRequested, "x.1")
	wantInvalid(t, err, events.ReasonInvalid, "id")
	if got := events.DerivedMsgID("blobwriter", "UPLOADS", 42); got != "blobwriter/UPLOADS/42" {
		t.Errorf("DerivedMsgID: got %q", got)
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"a": true, "A-z_0-9": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "a.b": false, "a>": false, "a*": false, "a b": false, "é": false, "a/b": false,
	} {
		if got := events.ValidID(id); got != want {
			t.Errorf("ValidID(%q): got %v, want %v", id, got, want)
		}
	}
}

func TestInvalidError(t *testing.T) {
	t.Parallel()
	e, _, _ := chain(t)
	e.SHA256 = "x"
	err := e.Validate(0)
	if got, want := err.Error(), "events: invalid: sha256: not 64 lowercase hex characters"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := events.ReasonOf(err); got != events.ReasonInvalid {
		t.Errorf("ReasonOf: got %q, want %q", got, events.ReasonInvalid)
	}
	if got := events.ReasonOf(nil); got != "" {
		t.Errorf("ReasonOf(nil): got %q, want empty", got)
	}
}

// Msg checks a built event's payload without parsing it back only while it is
// the builder's: every change made afterwards is still caught.
func TestMsgCatchesChangesToABuiltEvent(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		completed bool
		change    func(e *events.Event)
		attr      string
	}{
		"data bytes changed in place": {change: func(e *events.Event) { e.Data[len(e.Data)-2] = 'x' }, attr: "data"},
		"data replaced":               {change: func(e *events.Event) { e.Data = []byte(`{"key":"k","size":1}`) }, attr: "data"},
		"blob changed":                {change: func(e *events.Event) { e.Blob.Size++ }, attr: "data"},
		"blob key emptied":            {change: func(e *events.Event) { e.Blob.Key = "" }, attr: "data"},
		"sha256 changed":              {change: func(e *events.Event) { e.SHA256 = strings.Repeat("0", 64) }, attr: "data"},
		"content type changed":        {change: func(e *events.Event) { e.ContentType = "text/plain" }, attr: "datacontenttype"},
		"dataref added":               {change: func(e *events.Event) { e.DataRef = "s3://b/k" }, attr: events.ExtDataRef},
		"reference id changed":        {completed: true, change: func(e *events.Event) { e.Ref.ID = "other" }, attr: "data"},
		"reference time changed":      {completed: true, change: func(e *events.Event) { e.Ref.EventTime = e.Ref.EventTime.Add(1) }, attr: "data"},
		"completed data in place":     {completed: true, change: func(e *events.Event) { e.Data[len(e.Data)-3] = '9' }, attr: "data"},
		"id changed":                  {completed: true, change: func(e *events.Event) { e.ID = "other-id" }, attr: "data"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, stored, completed := chain(t)
			e := stored
			if tc.completed {
				e = completed
			}
			if _, err := e.Msg("m"); err != nil {
				t.Fatalf("unchanged: %v", err)
			}
			tc.change(e)
			_, err := e.Msg("m")
			wantInvalid(t, err, events.ReasonInvalid, tc.attr)
		})
	}
}

func TestCheckSubject(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"users/42/avatar", "users/42 é", "a..b", "users/..x", "x../y", "...", "users/./x", "a//b",
		"tenant:7/docs/report.pdf", strings.Repeat("s", events.MaxSubjectLen), strings.Repeat("é", events.MaxSubjectLen/2),
	} {
		if err := events.CheckSubject(s); err != nil {
			t.Errorf("CheckSubject(%q): got %v, want nil", s, err)
		}
	}
	for _, s := range []string{
		"", "..", "../x", "x/..", "a/../b", "a/..", "/..", `a\..\b`, `..\x`, "a/../",
		strings.Repeat("s", events.MaxSubjectLen+1), strings.Repeat("é", events.MaxSubjectLen/2) + "x",
		"a\x00", "a\nb", "a\u0085b", "a\x7f", "\u200bx", "x\u200d", "\ufeffx", "a\u202eb", "a\u2066b", "a\u00adb",
		"a\u2028b", "a\u2029b", "a\U000e0041", " x", "x\t", "\xff",
	} {
		wantInvalid(t, events.CheckSubject(s), events.ReasonInvalid, "subject")
	}
}

func TestCheckContentType(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{
		"image/png", "text/plain; charset=utf-8", `video/mp4; codecs="avc1.42E01E, mp4a.40.2"`,
		"application/x-" + strings.Repeat("z", events.MaxContentTypeLen-len("application/x-")),
	} {
		if err := events.CheckContentType(ct); err != nil {
			t.Errorf("CheckContentType(%q): got %v, want nil", ct, err)
		}
	}
	for _, ct := range []string{
		"", "text", "text/", "/plain", "not a type", "text/plain\n", "text/plain; x=\u200b",
		"application/x-" + strings.Repeat("z", events.MaxContentTypeLen-len("application/x-")+1),
		"text/plain; x=" + strings.Repeat("y", 5000),
	} {
		wantInvalid(t, events.CheckContentType(ct), events.ReasonInvalid, "datacontenttype")
	}
}

func TestCheckTime(t *testing.T) {
	t.Parallel()
	req, _, _ := chain(t)
	now := req.Time
	for _, tt := range []struct {
		ahead, skew time.Duration
		ok          bool
	}{
		{-24 * time.Hour, time.Minute, true},
		{0, time.Minute, true},
		{time.Minute, time.Minute, true},
		{time.Minute + time.Microsecond, time.Minute, false},
		{events.DefaultMaxClockSkew, 0, true},
		{events.DefaultMaxClockSkew + time.Second, 0, false},
		{100 * 365 * 24 * time.Hour, time.Hour, false},
	} {
		e := *req
		e.Time = now.Add(tt.ahead)
		err := e.CheckTime(now, tt.skew)
		if tt.ok {
			if err != nil {
				t.Errorf("%v ahead, skew %v: got %v, want nil", tt.ahead, tt.skew, err)
			}
			continue
		}
		wantInvalid(t, err, events.ReasonInvalid, "time")
	}
}

// The owner is the producer's source unless it names another; the builders
// copy it down the chain and the completed reference carries it.
func TestOwnerAlongTheChain(t *testing.T) {
	t.Parallel()
	req, stored, completed := chain(t)
	for _, e := range []*events.Event{req, stored, completed} {
		if e.Owner != testSource {
			t.Errorf("%s without an owner: Owner %q, want the source %q", e.Type, e.Owner, testSource)
		}
	}
	if completed.Ref.Owner != testSource {
		t.Errorf("completed reference: Owner %q, want %q", completed.Ref.Owner, testSource)
	}

	owned, err := events.NewRequested(events.Request{
		ID: testID, Source: testSource, Owner: "alice", Subject: testSubject, ContentType: "text/plain",
		Time: testTime, Data: []byte("hello"),
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := events.NewBlobStored(owned, *stored.Blob, "/blobref/blobwriter")
	if err != nil {
		t.Fatal(err)
	}
	co, err := events.NewCompleted(st, events.Reference{ID: testID, Subject: testSubject, Blob: *stored.Blob, EventTime: testTime}, "/blobref/refwriter")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*events.Event{owned, st, co} {
		if e.Owner != "alice" {
			t.Errorf("%s: Owner %q, want alice", e.Type, e.Owner)
		}
		m, err := e.Msg(e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get("ce-owner"); got != "alice" {
			t.Errorf("%s: ce-owner %q, want alice", e.Type, got)
		}
		back, err := events.Decode(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if d := equalEvents(back, e); d != "" {
			t.Errorf("%s round trip: %s", e.Type, d)
		}
		// A message without ce-owner is owned by its source.
		delete(m.Header, "ce-owner")
		if e.Type != events.TypeCompleted {
			back, err = events.Decode(m.Subject, m.Header, m.Data)
			if err != nil || back.Owner != e.Source {
				t.Errorf("%s without ce-owner: got owner %q (%v), want the source %q", e.Type, back.Owner, err, e.Source)
			}
		}
	}
	if co.Ref.Owner != "alice" || !strings.Contains(string(co.Data), `"owner":"alice"`) {
		t.Errorf("completed reference: got %+v %s, want owner alice", co.Ref, co.Data)
	}

	// A reference of another owner is refused by the builder.
	ref := *co.Ref
	ref.Owner = "bob"
	_, err = events.NewCompleted(st, ref, "/blobref/refwriter")
	wantInvalid(t, err, events.ReasonInvalid, "data")

	// A completed event recorded before owners carries none in its payload: it still decodes.
	old := `{"id":"` + testID + `","subject":"` + testSubject + `","blob":` + toJSON(*stored.Blob) + `,"eventTime":"2025-01-02T03:04:05.123456Z"}`
	m, err := completed.Msg("")
	if err != nil {
		t.Fatal(err)
	}
	delete(m.Header, "ce-owner")
	e, err := events.Decode(m.Subject, m.Header, []byte(old))
	if err != nil || e.Owner != completed.Source || e.Ref.Owner != "" {
		t.Errorf("completed event from before owners: got %+v, %v; want it decoded, owned by its source", e, err)
	}
}
