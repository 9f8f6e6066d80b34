package step

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/blobref/blobref/pkg/events"
)

// TracerName is the instrumentation scope of the runtime's spans.
const TracerName = "github.com/blobref/blobref/pkg/step"

// TraceContext returns the span context the traceparent and tracestate of
// ev carry (the CloudEvents distributed-tracing extension), marked remote;
// an invalid one when ev carries none.
func TraceContext(ev *events.Event) trace.SpanContext {
	if ev == nil || ev.TraceParent == "" {
		return trace.SpanContext{}
	}
	c := propagation.MapCarrier{"traceparent": ev.TraceParent}
	if ev.TraceState != "" {
		c["tracestate"] = ev.TraceState
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
}

// SetTraceContext makes sc the trace context ev carries: its traceparent
// and tracestate. An invalid sc leaves ev as it is.
func SetTraceContext(ev *events.Event, sc trace.SpanContext) {
	if !sc.IsValid() {
		return
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), c)
	ev.TraceParent, ev.TraceState = c["traceparent"], c["tracestate"]
}

// tracing makes a runner's spans: one per batch, linked to the span
// contexts of its messages; one per message (a consumer span, child of the
// context its event carries), and under it one for each of its side
// effect, its record and its publish (a producer span, whose context the
// emitted event carries). A nil *tracing is tracing off: every method
// returns at once, and a job carries no span.
type tracing struct {
	tracer trace.Tracer
	step   string
	// Span names, made once: the batch's, the message's and its parts'.
	batchName, processName string
	partNames              [partPublish + 1]string
}

// part is a stage of a message that has a span of its own.
type part int

const (
	partEffect part = iota
	partRecord
	partPublish
)

// newTracing returns the tracing of the step named step with tp; nil (off)
// when tp is nil.
func newTracing(tp trace.TracerProvider, step string) *tracing {
	if tp == nil {
		return nil
	}
	return &tracing{
		tracer: tp.Tracer(TracerName), step: step,
		batchName: step + " batch", processName: step + " process",
		partNames: [...]string{partEffect: step + " effect", partRecord: step + " record", partPublish: step + " publish"},
	}
}

// spans is what a job carries of tracing: its message's span and its
// publish span while the publish is under way; zero when tracing is off.
type spans struct {
	span    trace.Span
	publish trace.Span
}

// batch starts the span of a batch whose messages are decoded: a new root,
// linked to the context each message's event carries. The caller ends it.
func (t *tracing) batch(ctx context.Context, n int) trace.Span {
	if t == nil {
		return nil
	}
	_, span := t.tracer.Start(ctx, t.batchName, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("blobref.step", t.step),
			attribute.Int("messaging.batch.message_count", n)))
	return span
}

// message starts the span of j, child of the context its event carries,
// and links the batch span to that context.
func message[R any](t *tracing, ctx context.Context, batch trace.Span, j *job[R]) {
	if t == nil {
		return
	}
	remote := TraceContext(j.ev)
	if remote.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, remote)
		if batch != nil {
			batch.AddLink(trace.Link{SpanContext: remote})
		}
	}
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", j.out.Subject), attribute.String("blobref.step", t.step),
		attribute.Int64("messaging.nats.message.delivery_count", int64(j.out.Deliveries)), // #nosec G115 -- a delivery count, far below 2^63
	}
	if j.ev != nil {
		attrs = append(attrs, attribute.String("messaging.message.id", j.ev.ID), attribute.String("cloudevents.event_type", j.ev.Type))
	}
	_, j.trace.span = t.tracer.Start(ctx, t.processName, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrs...))
	if batch != nil {
		j.trace.span.AddLink(trace.Link{SpanContext: batch.SpanContext()})
	}
}

// child starts the span of a part of j under its message span, on ctx
// (whose deadline and cancellation it keeps); nil when j has no span. The
// publish span is a producer span.
func child[R any](t *tracing, ctx context.Context, j *job[R], p part) (context.Context, trace.Span) {
	if t == nil || j.trace.span == nil {
		return ctx, nil
	}
	kind := trace.SpanKindInternal
	if p == partPublish {
		kind = trace.SpanKindProducer
	}
	return t.tracer.Start(trace.ContextWithSpan(ctx, j.trace.span), t.partNames[p], trace.WithSpanKind(kind))
}

// end ends span (if any) with err.
func end(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// settled ends j's message span with its outcome.
func settled(span trace.Span, out Outcome) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.String("blobref.outcome", out.Kind.String()))
	if out.Reason != "" {
		span.SetAttributes(attribute.String("blobref.reason", out.Reason))
	}
	var err error
	switch {
	case out.Kind == Dead:
		err = out.Err
		if err == nil {
			err = errors.New(out.Reason)
		}
	case out.Kind == Retried && out.Reason != reasonBusy:
		err = out.Err
	}
	end(span, err)
}
