package stepservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TracingConfig is what decides whether a service traces, and where to, in
// the OpenTelemetry SDK's standard variables. Tracing is off by default:
// it is on when OTEL_TRACES_EXPORTER is otlp, or when it is unset and an
// OTLP endpoint is; OTEL_SDK_DISABLED=true turns it off whatever the rest
// says. The OTLP exporter and the SDK read their other variables
// themselves (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _INSECURE,
// _CERTIFICATE, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*,
// ...); docs/tracing.md lists them.
type TracingConfig struct {
	SDKDisabled bool `env:"OTEL_SDK_DISABLED"`
	// Exporter is otlp or none; unset means otlp when an endpoint is set.
	Exporter string `env:"OTEL_TRACES_EXPORTER"`
	// Endpoint and TracesEndpoint are the OTLP receiver's address (a URL);
	// TracesEndpoint, for traces only, wins.
	Endpoint       string `env:"OTEL_EXPORTER_OTLP_ENDPOINT"`
	TracesEndpoint string `env:"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"`
	// Protocol and TracesProtocol are grpc or http/protobuf [http/protobuf];
	// TracesProtocol wins.
	Protocol       string `env:"OTEL_EXPORTER_OTLP_PROTOCOL"`
	TracesProtocol string `env:"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"`
}

// OTLP protocols.
const (
	protocolGRPC = "grpc"
	protocolHTTP = "http/protobuf"
)

// Enabled reports whether the service traces.
func (c *TracingConfig) Enabled() bool {
	switch {
	case c.SDKDisabled:
		return false
	case c.Exporter == "":
		return c.Endpoint != "" || c.TracesEndpoint != ""
	}
	return strings.EqualFold(c.Exporter, "otlp")
}

func (c *TracingConfig) protocol() string {
	for _, p := range []string{c.TracesProtocol, c.Protocol} {
		if p != "" {
			return p
		}
	}
	return protocolHTTP
}

// Validate names each bad setting.
func (c *TracingConfig) Validate() error {
	var errs []error
	switch strings.ToLower(c.Exporter) {
	case "", "otlp", "none":
	default:
		errs = append(errs, fmt.Errorf("config: OTEL_TRACES_EXPORTER: %q is not otlp or none (the only trace exporters blobref has)", c.Exporter))
	}
	for name, p := range map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": c.Protocol, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": c.TracesProtocol} {
		if p != "" && p != protocolGRPC && p != protocolHTTP {
			errs = append(errs, fmt.Errorf("config: %s: %q is not %s or %s", name, p, protocolGRPC, protocolHTTP))
		}
	}
	return errors.Join(errs...)
}

// StartTracing returns the TracerProvider a service named service traces
// with, and the function that flushes and stops it on the way out; a nil
// TracerProvider (and a shutdown that does nothing) when c leaves tracing
// off, so that nothing on the hot path pays for it. On, it is the
// OpenTelemetry SDK with a batch span processor and the OTLP exporter
// (gRPC or HTTP), which connects lazily: a receiver that is down delays
// nothing but the spans. Export errors are logged with log.
func StartTracing(ctx context.Context, c TracingConfig, service string, log *slog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	off := func(context.Context) error { return nil }
	if !c.Enabled() {
		return nil, off, nil
	}
	var (
		exp *otlptrace.Exporter
		err error
	)
	if c.protocol() == protocolGRPC {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, off, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	// Later detectors win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// (which the SDK reads) over the service's own name.
	res, err := resource.New(ctx, resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		return nil, off, fmt.Errorf("tracing: resource: %w", err)
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "error", err) }))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info("tracing on", "protocol", c.protocol(), "endpoint", firstOf(c.TracesEndpoint, c.Endpoint, "(the exporter's default)"))
	return tp, tp.Shutdown, nil
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// StopTracing flushes the spans not yet exported and stops tracing with
// stop (what StartTracing returned), within a few seconds: on the way out,
// after the work is done.
func StopTracing(stop func(context.Context) error, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		log.Warn("tracing: spans not flushed", "error", err)
	}
}
