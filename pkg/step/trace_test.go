package step

import (
	"context"
	"errors"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/blobref/blobref/pkg/events"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func tracedEvent(t testing.TB) *events.Event {
	t.Helper()
	ev, err := events.NewRequested(events.Request{
		ID: "abc123", Source: "/test", Subject: "users/42/avatar", ContentType: "text/plain",
		Data: []byte("hello"), TraceParent: testTraceParent, TraceState: "rojo=00f067aa0ba902b7",
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// traceOneMessage makes every span the runtime makes of a message that
// goes through its side effect, record and publish, as the runner does.
func traceOneMessage(tr *tracing, j *job[int], next *events.Event) {
	ctx := context.Background()
	j.trace = spans{}
	var batch trace.Span
	if tr != nil {
		batch = tr.batch(ctx, 1)
	}
	message(tr, ctx, batch, j)
	_, span := child(tr, ctx, j, partEffect)
	end(span, nil)
	_, span = child(tr, ctx, j, partRecord)
	end(span, nil)
	if _, j.trace.publish = child(tr, ctx, j, partPublish); j.trace.publish != nil {
		SetTraceContext(next, j.trace.publish.SpanContext())
	}
	end(j.trace.publish, nil)
	settled(j.trace.span, Outcome{Kind: Done})
	if batch != nil {
		batch.End()
	}
}

// TestTracingOffCostsNothing: with no TracerProvider, the tracing of a
// message allocates nothing (and leaves the emitted event's trace context,
// copied from its input, alone).
func TestTracingOffCostsNothing(t *testing.T) {
	ev := tracedEvent(t)
	j := &job[int]{ev: ev, out: Outcome{Subject: events.RequestedSubject(ev.ID)}}
	next := tracedEvent(t)
	allocs := testing.AllocsPerRun(1000, func() { traceOneMessage(nil, j, next) })
	if allocs != 0 {
		t.Errorf("tracing off: got %v allocations per message, want 0", allocs)
	}
	if next.TraceParent != testTraceParent {
		t.Errorf("tracing off: the emitted event's traceparent became %q, want %q", next.TraceParent, testTraceParent)
	}
}

// TestTracingSpans checks the spans of one message: a batch span linked to
// the context the message carries, the message's consumer span its child,
// and effect, record and publish under it; the emitted event carries the
// publish span's context.
func TestTracingSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background()) //nolint:errcheck
	ev := tracedEvent(t)
	remote := TraceContext(ev)
	if !remote.IsValid() || remote.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || remote.TraceState().Get("rojo") != "00f067aa0ba902b7" {
		t.Fatalf("TraceContext: got %v, want the event's traceparent and tracestate", remote)
	}
	j := &job[int]{ev: ev, out: Outcome{Subject: events.RequestedSubject(ev.ID)}}
	next := tracedEvent(t)
	traceOneMessage(newTracing(tp, "blob"), j, next)

	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = s
	}
	for _, name := range []string{"blob batch", "blob process", "blob effect", "blob record", "blob publish"} {
		if byName[name] == nil {
			t.Fatalf("span %q not ended; got %d spans", name, len(rec.Ended()))
		}
	}
	batch, msg := byName["blob batch"], byName["blob process"]
	if batch.Parent().IsValid() || len(batch.Links()) != 1 || !batch.Links()[0].SpanContext.Equal(remote) {
		t.Errorf("batch span: parent %v, links %v; want a root linked to %v", batch.Parent(), batch.Links(), remote)
	}
	if !msg.Parent().Equal(remote) || msg.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("message span: parent %v, kind %v; want %v, consumer", msg.Parent(), msg.SpanKind(), remote)
	}
	for _, name := range []string{"blob effect", "blob record", "blob publish"} {
		if got := byName[name].Parent().SpanID(); got != msg.SpanContext().SpanID() {
			t.Errorf("%s: parent span %s, want the message's %s", name, got, msg.SpanContext().SpanID())
		}
	}
	pub := byName["blob publish"]
	if pub.SpanKind() != trace.SpanKindProducer {
		t.Errorf("publish span kind %v, want producer", pub.SpanKind())
	}
	if got := TraceContext(next); got.SpanID() != pub.SpanContext().SpanID() || got.TraceID() != remote.TraceID() {
		t.Errorf("emitted event carries %v, want the publish span's %v", got, pub.SpanContext())
	}
}

// TestTracingSettledStatus: a dead-lettered message's span says why.
func TestTracingSettledStatus(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background()) //nolint:errcheck
	j := &job[int]{ev: tracedEvent(t)}
	message(newTracing(tp, "blob"), context.Background(), nil, j)
	settled(j.trace.span, Outcome{Kind: Dead, Reason: events.ReasonConflict, Err: errors.New("another sha256")})
	got := rec.Ended()
	if len(got) != 1 || got[0].Status().Description != "another sha256" || got[0].Status().Code.String() != "Error" {
		t.Fatalf("got %v, want one span with the error status", got)
	}
}

type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkTracing is what tracing costs a message: off (no
// TracerProvider) and on (the SDK with a batch span processor, as
// stepservice sets it up, exporting nowhere).
func BenchmarkTracing(b *testing.B) {
	ev := tracedEvent(b)
	next := tracedEvent(b)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}, sdktrace.WithBatchTimeout(time.Second)))
	defer tp.Shutdown(context.Background()) //nolint:errcheck
	for _, tc := range []struct {
		name string
		tr   *tracing
	}{{"off", nil}, {"on", newTracing(tp, "blob")}} {
		b.Run(tc.name, func(b *testing.B) {
			j := &job[int]{ev: ev, out: Outcome{Subject: events.RequestedSubject(ev.ID)}}
			b.ReportAllocs()
			for b.Loop() {
				traceOneMessage(tc.tr, j, next)
			}
		})
	}
}
