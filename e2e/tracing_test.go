package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP trace receiver, over gRPC and over HTTP
// (protobuf), that keeps every span it is sent.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	grpcAddr, httpURL string

	mu      sync.Mutex
	spans   []receivedSpan
	changed chan struct{} // closed and replaced when spans arrive
}

// receivedSpan is a span and the service.name of the resource that sent it.
type receivedSpan struct {
	service string
	*tracepb.Span
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{changed: make(chan struct{})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	r.grpcAddr = lis.Addr().String()
	hs := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	t.Cleanup(hs.Close)
	r.httpURL = hs.URL
	return r
}

// Export is the OTLP/gRPC trace service.
func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// serveHTTP is OTLP/HTTP with protobuf bodies: POST /v1/traces.
func (r *otlpReceiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces with application/x-protobuf", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(req.Body)
	var er collectortrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &er)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&er)
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *otlpReceiver) add(req *collectortrace.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, receivedSpan{service: service, Span: s})
			}
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// await waits until the spans received hold every span named in want
// (service and span name) for which match says yes, and returns them by
// name; the test fails at the deadline with what it got.
func (r *otlpReceiver) await(t *testing.T, within time.Duration, want []string, match func(receivedSpan) bool) map[string]receivedSpan {
	t.Helper()
	deadline := time.After(within)
	for {
		r.mu.Lock()
		got := map[string]receivedSpan{}
		var names []string
		for _, s := range r.spans {
			key := s.service + ": " + s.GetName()
			names = append(names, key)
			if match(s) {
				got[key] = s
			}
		}
		changed := r.changed
		r.mu.Unlock()
		missing := 0
		for _, w := range want {
			if _, ok := got[w]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		select {
		case <-changed:
		case <-deadline:
			sort.Strings(names)
			t.Fatalf("spans received within %v: %v; want %v in the trace", within, names, want)
		}
	}
}

// TestTraceAcrossServices: an upload sent to ingest with a traceparent is
// one trace through ingest, blobwriter and refwriter, exported over OTLP
// (ingest over HTTP, the consumers over gRPC) to a receiver of the test's:
// the request's server span continues the caller's trace; each step's
// message span is the child of the publish span of the step before it;
// each batch span links to the context its message carried; and the
// wait for completion links to the completed event's context.
func TestTraceAcrossServices(t *testing.T) {
	t.Parallel()
	rcv := startOTLPReceiver(t)
	p := newPipeline(t)
	fast := "OTEL_BSP_SCHEDULE_DELAY=50" // export soon; the wait below is for the spans, not a time
	grpcOTLP := []string{"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.grpcAddr, fast}
	p.start("blobwriter", grpcOTLP...)
	p.start("refwriter", grpcOTLP...)
	// ingest: only an endpoint, which turns tracing on (http/protobuf, the default protocol).
	in := p.startIngest("", "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.httpURL, fast)

	const (
		traceID  = "0af7651916cd43dd8448eb211c80319c"
		callerID = "b7ad6b7169203331"
	)
	u := newUpload("traced", 1000)
	r := in.post(t, u, "traced-key", "Prefer", "wait=30", "traceparent", "00-"+traceID+"-"+callerID+"-01")
	u = r.state(t, http.StatusCreated).checkCompleted(t, r, u)

	want := []string{
		"ingest: POST /v1/uploads", "ingest: ingest publish", "ingest: ingest wait for completion",
		"blobwriter: blob process", "blobwriter: blob effect", "blobwriter: blob record", "blobwriter: blob publish",
		"refwriter: ref process", "refwriter: ref effect", "refwriter: ref record", "refwriter: ref publish",
	}
	inTrace := func(s receivedSpan) bool { return hex.EncodeToString(s.GetTraceId()) == traceID }
	spans := rcv.await(t, time.Minute, want, inTrace)
	id := func(b []byte) string { return hex.EncodeToString(b) }
	span := func(name string) receivedSpan { return spans[name] }
	parentOf := func(child, parent string) {
		t.Helper()
		if got, want := id(span(child).GetParentSpanId()), id(span(parent).GetSpanId()); got != want {
			t.Errorf("%s: parent span %s, want %s's %s", child, got, parent, want)
		}
	}
	if got := id(span("ingest: POST /v1/uploads").GetParentSpanId()); got != callerID {
		t.Errorf("ingest's server span: parent %s, want the caller's %s", got, callerID)
	}
	if k := span("ingest: POST /v1/uploads").GetKind(); k != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("ingest's request span: kind %v, want server", k)
	}
	parentOf("ingest: ingest publish", "ingest: POST /v1/uploads")
	parentOf("ingest: ingest wait for completion", "ingest: POST /v1/uploads")
	parentOf("blobwriter: blob process", "ingest: ingest publish")
	parentOf("refwriter: ref process", "blobwriter: blob publish")
	for _, s := range []string{"blob", "ref"} {
		svc := map[string]string{"blob": "blobwriter: ", "ref": "refwriter: "}[s]
		for _, part := range []string{"effect", "record", "publish"} {
			parentOf(svc+s+" "+part, svc+s+" process")
		}
		if k := span(svc + s + " process").GetKind(); k != tracepb.Span_SPAN_KIND_CONSUMER {
			t.Errorf("%s process: kind %v, want consumer", s, k)
		}
		if k := span(svc + s + " publish").GetKind(); k != tracepb.Span_SPAN_KIND_PRODUCER {
			t.Errorf("%s publish: kind %v, want producer", s, k)
		}
	}
	if k := span("ingest: ingest publish").GetKind(); k != tracepb.Span_SPAN_KIND_PRODUCER {
		t.Errorf("ingest publish: kind %v, want producer", k)
	}
	if !linksTo(span("ingest: ingest wait for completion"), span("refwriter: ref publish")) {
		t.Errorf("ingest's wait: links %v, want one to refwriter's publish span %s (the completed event's context)",
			span("ingest: ingest wait for completion").GetLinks(), id(span("refwriter: ref publish").GetSpanId()))
	}

	// The completed event carries refwriter's publish span's context.
	completed := p.completed.Await(t, 1, time.Minute)[u.ID]
	var parents []string
	for _, ev := range completed {
		parents = append(parents, ev.TraceParent)
	}
	if want := "00-" + traceID + "-" + id(span("refwriter: ref publish").GetSpanId()) + "-01"; len(parents) != 1 || parents[0] != want {
		t.Errorf("completed events with traceparents %q, want one with %s", parents, want)
	}

	// Each batch span is a root of its own, linked to its message's context:
	// the publish span of the step before.
	for batch, publisher := range map[string]string{
		"blobwriter: blob batch": "ingest: ingest publish",
		"refwriter: ref batch":   "blobwriter: blob publish",
	} {
		pub := span(publisher)
		linked := rcv.await(t, time.Minute, []string{batch}, func(s receivedSpan) bool {
			return s.service+": "+s.GetName() == batch && linksTo(s, pub)
		})[batch]
		if len(linked.GetParentSpanId()) != 0 {
			t.Errorf("%s: parent %s, want none (a batch span is a root)", batch, id(linked.GetParentSpanId()))
		}
		if !linksTo(span(strings.Replace(batch, "batch", "process", 1)), linked) {
			t.Errorf("%s: the message span does not link to its batch span", batch)
		}
	}
	if t.Failed() {
		for _, name := range want {
			s := span(name)
			t.Logf("%s: span %s parent %s", name, id(s.GetSpanId()), id(s.GetParentSpanId()))
		}
	}
}

// linksTo reports whether s links to the span to.
func linksTo(s, to receivedSpan) bool {
	for _, l := range s.GetLinks() {
		if bytes.Equal(l.GetTraceId(), to.GetTraceId()) && bytes.Equal(l.GetSpanId(), to.GetSpanId()) {
			return true
		}
	}
	return false
}
