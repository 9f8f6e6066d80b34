package uploads

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// tracerName is the instrumentation scope of ingest's spans.
const tracerName = "github.com/blobref/blobref/services/ingest"

// Span names.
const (
	spanPublish = "ingest publish"
	spanWait    = "ingest wait for completion"
)

// tracer is the service's tracer; nil when tracing is off.
func (s *Service) tracer() trace.Tracer {
	if s.TracerProvider == nil {
		return nil
	}
	return s.TracerProvider.Tracer(tracerName)
}

// startPublish starts the producer span of j's publish, under the span of
// the request that made it (if any), and returns its context, which the
// request event carries; nothing when tracing is off.
func (s *Service) startPublish(j *job) trace.SpanContext {
	t := s.tracer()
	if t == nil {
		return trace.SpanContext{}
	}
	ctx := j.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	_, j.span = t.Start(ctx, spanPublish, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.destination.name", events.RequestedSubject(j.rec.ID)),
		attribute.String("messaging.message.id", j.rec.ID), attribute.Int("blobref.publish_count", j.rec.PublishCount)))
	return j.span.SpanContext()
}

// endPublish ends j's publish span with its outcome.
func endPublish(j *job) {
	if j.span == nil {
		return
	}
	if j.err != nil {
		j.span.RecordError(j.err)
		j.span.SetStatus(codes.Error, j.err.Error())
	}
	j.span.End()
	j.span = nil
}

// startWait starts the span of a request's wait for its upload's completed
// event (Prefer: wait); nil when tracing is off.
func (s *Service) startWait(ctx context.Context, id string) (context.Context, trace.Span) {
	t := s.tracer()
	if t == nil {
		return ctx, nil
	}
	return t.Start(ctx, spanWait, trace.WithAttributes(attribute.String("blobref.upload_id", id)))
}

// endWait ends the wait span: linked to the context the completed event
// carries (refwriter's publish), or saying that none came in time.
func endWait(span trace.Span, completed *events.Event) {
	if span == nil {
		return
	}
	if completed == nil {
		span.AddEvent("not completed within the wait")
	} else {
		span.AddEvent("completed", trace.WithAttributes(attribute.String("blobref.blob.key", completed.Ref.Blob.Key)))
		if sc := step.TraceContext(completed); sc.IsValid() {
			span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("blobref.link", "completed event")}})
		}
	}
	span.End()
}
