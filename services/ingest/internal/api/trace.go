package api

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the API's spans.
const tracerName = "github.com/blobref/blobref/services/ingest/internal/api"

// startSpan starts the server span of r, named after its route, child of
// the W3C traceparent the request carries (if any); r itself and a nil
// span when tracing is off.
func (a *API) startSpan(r *http.Request, route string) (*http.Request, trace.Span) {
	if a.opts.TracerProvider == nil {
		return r, nil
	}
	ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := a.opts.TracerProvider.Tracer(tracerName).Start(ctx, route, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", route),
			attribute.String("url.path", r.URL.Path)))
	return r.WithContext(ctx), span
}

// endSpan ends the server span with the response's status and the upload
// the request was about.
func endSpan(span trace.Span, status int, info *requestInfo) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if info.id != "" {
		span.SetAttributes(attribute.String("blobref.upload_id", info.id))
	}
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}
