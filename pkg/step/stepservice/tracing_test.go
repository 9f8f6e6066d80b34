package stepservice_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/blobref/blobref/pkg/step/stepservice"
)

// TestTracingIsOffByDefault: tracing is on only when the OTEL_* variables
// ask for it, and OTEL_SDK_DISABLED wins; off, there is no TracerProvider.
func TestTracingIsOffByDefault(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		on   bool
	}{
		{"nothing set", nil, false},
		{"an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{"a traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true},
		{"otlp exporter", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"none exporter with an endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, false},
		{"SDK disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		{"gRPC", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var cfg testConfig
			if err := stepservice.Load(&cfg); err != nil {
				t.Fatal(err)
			}
			if got := cfg.Tracing.Enabled(); got != tc.on {
				t.Fatalf("Enabled: got %v, want %v", got, tc.on)
			}
			tp, stop, err := stepservice.StartTracing(context.Background(), cfg.Tracing, "test", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if (tp != nil) != tc.on {
				t.Errorf("StartTracing: got TracerProvider %v, want one: %v", tp, tc.on)
			}
			stepservice.StopTracing(stop, slog.New(slog.DiscardHandler))
		})
	}
}
