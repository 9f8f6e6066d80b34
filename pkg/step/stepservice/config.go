// Package stepservice makes a service of a step: its configuration read
// from the environment (the names every blobref service reads: NATS_*,
// DATABASE_URL, METRICS_ADDR, CONSUMER_*, ...), its clients for NATS and
// Postgres, the operations HTTP server (/metrics, /healthz, /readyz) and the
// process lifecycle under SIGINT and SIGTERM. A consumer's main is a call
// to MainStep, or to Main and Run when it has settings of its own.
package stepservice

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/failpoint"
)

// Config is the configuration every service shares. Service configs embed
// it; Load fills them from the environment in one place.
type Config struct {
	NATS NATSConfig
	// Tracing is OpenTelemetry tracing, off unless the OTEL_* variables
	// turn it on (see StartTracing).
	Tracing TracingConfig

	// DatabaseURL is the Postgres connection string (libpq URL or DSN).
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"`
	// MetricsAddr is where /metrics, /healthz and /readyz are served; empty
	// disables them.
	MetricsAddr string `env:"METRICS_ADDR"`
	// Pprof serves Go's runtime profiles under /debug/pprof/ on
	// METRICS_ADDR; off by default (profiles reveal internals and cost CPU).
	Pprof bool `env:"PPROF_ENABLED"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
	// LogFormat is json or text.
	LogFormat string `env:"LOG_FORMAT" envDefault:"json"`
	// ShutdownTimeout bounds graceful shutdown after SIGTERM. A consumer
	// gives its in-flight side effects ShutdownGrace(ShutdownTimeout) to
	// finish, and the rest to record, publish and ack what finished.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s"`
	// NATSSetup says who creates the streams, the staging bucket and the
	// durable consumers: SetupAuto (the service, at start-up) or SetupOff
	// (an operator, with blobrefctl setup; the service only looks them up).
	NATSSetup string `env:"NATS_SETUP" envDefault:"auto"`
	// Failpoints arms failpoints for crash tests (see package failpoint).
	// Only test builds (-tags blobref_failpoints) have them; a release
	// build refuses a non-empty value.
	Failpoints string `env:"BLOBREF_FAILPOINTS"`
	// GCMinHeap is the heap size, in bytes, below which the garbage
	// collector waits for more garbage (see DefaultGCMinHeap); 0 leaves
	// Go's own floor (4 MiB). Above it the collector follows GOGC as
	// usual. Its default is the service's: the value its main sets before
	// Load, 0 if none.
	GCMinHeap int64 `env:"GC_MIN_HEAP"`
	// GOGC is Go's own setting, read here only to tell whether the
	// operator set it: then GC_MIN_HEAP is not applied, and GOGC is as
	// given.
	GOGC string `env:"GOGC"`

	// The streams' settings, when a service creates them. Their defaults
	// are package events' (DefaultMaxAge, ...), filled in by Load.

	// StreamReplicas is the replica count of UPLOADS and UPLOADS_DLQ (3 on a
	// JetStream cluster) [1].
	StreamReplicas int `env:"STREAM_REPLICAS"`
	// StreamMaxAge is how long UPLOADS keeps events for replay [168h].
	StreamMaxAge time.Duration `env:"STREAM_MAX_AGE"`
	// DLQMaxAge is how long UPLOADS_DLQ keeps dead letters [720h].
	DLQMaxAge time.Duration `env:"DLQ_MAX_AGE"`
	// StreamMaxBytes bounds what UPLOADS stores, in bytes; -1 is no bound
	// [1 GiB]. Full, it refuses new events: uploads wait, none is dropped.
	StreamMaxBytes int64 `env:"STREAM_MAX_BYTES"`
	// DLQMaxBytes bounds what UPLOADS_DLQ stores, in bytes; -1 is no bound
	// [256 MiB].
	DLQMaxBytes int64 `env:"DLQ_MAX_BYTES"`
}

// streamDefaults are the stream settings Load fills in when the service set
// none: package events' defaults.
func streamDefaults() Config {
	return Config{
		StreamReplicas: 1, StreamMaxAge: events.DefaultMaxAge, DLQMaxAge: events.DefaultDLQMaxAge,
		StreamMaxBytes: events.DefaultMaxBytes, DLQMaxBytes: events.DefaultDLQMaxBytes,
	}
}

// ShutdownGrace is how long, of a graceful shutdown bounded by timeout, a
// consumer's in-flight side effects may finish: all of it but what
// recording, publishing and acking them takes (5s, or half of a shorter
// timeout). Those that outlast it are handed back.
func ShutdownGrace(timeout time.Duration) time.Duration {
	return timeout - min(5*time.Second, timeout/2)
}

// Setup modes, the values of NATS_SETUP.
const (
	// SetupAuto: the service creates or updates what it uses at start-up
	// (the streams; ingest the staging bucket; a consumer its durable
	// consumer). Its NATS user needs the rights to.
	SetupAuto = "auto"
	// SetupOff: the service only looks them up, and waits until they exist:
	// `blobrefctl setup` creates them, as an operator step, and the
	// services' NATS users need no right to create or change them.
	SetupOff = "off"
)

// NATSConfig is how a service reaches NATS, with the names users of nats.go
// and the NATS CLI expect.
type NATSConfig struct {
	URL          string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	Creds        string `env:"NATS_CREDS"`         // path to a .creds file (JWT + nkey seed)
	NKey         string `env:"NATS_NKEY"`          // path to an nkey seed file
	User         string `env:"NATS_USER"`          //
	Password     string `env:"NATS_PASSWORD"`      //
	PasswordFile string `env:"NATS_PASSWORD_FILE"` // a file holding NATS_PASSWORD (a mounted Secret), read at each connect
	Token        string `env:"NATS_TOKEN"`         //
	CA           string `env:"NATS_CA"`            // PEM file of CAs that sign the server's certificate
	Cert         string `env:"NATS_CERT"`          // client certificate (mutual TLS)
	Key          string `env:"NATS_KEY"`           // client key (mutual TLS)
	TLSFirst     bool   `env:"NATS_TLS_FIRST"`     // TLS handshake before the INFO protocol
	// InboxPrefix is the prefix of the connection's reply subjects (JetStream
	// API answers, pull deliveries, publish acks): the user's permissions
	// let it subscribe to its own prefix only, so no service sees another's
	// replies. Empty means "_INBOX_<name>", name being the service's.
	InboxPrefix string `env:"NATS_INBOX_PREFIX"`
}

// DefaultInboxPrefix is the inbox prefix of a connection named name when
// NATS_INBOX_PREFIX is not set: "_INBOX_" and the name, with characters
// other than letters, digits, "_" and "-" replaced by "_".
func DefaultInboxPrefix(name string) string {
	return "_INBOX_" + strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, name)
}

// Validate names each bad setting.
func (c *NATSConfig) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: "+format, append([]any{name}, args...)...))
	}
	if c.URL == "" {
		bad("NATS_URL", "must be set")
	}
	if (c.Cert == "") != (c.Key == "") {
		bad("NATS_CERT", "NATS_CERT and NATS_KEY go together")
	}
	if c.Password != "" && c.PasswordFile != "" {
		bad("NATS_PASSWORD_FILE", "set NATS_PASSWORD or NATS_PASSWORD_FILE, not both")
	}
	if c.PasswordFile != "" && c.User == "" {
		bad("NATS_PASSWORD_FILE", "needs NATS_USER")
	}
	if p := c.InboxPrefix; p != "" && (strings.ContainsAny(p, "*> \t\r\n") || strings.HasPrefix(p, ".") ||
		strings.HasSuffix(p, ".") || strings.Contains(p, "..")) {
		bad("NATS_INBOX_PREFIX", "%q is not a subject prefix (tokens separated by single dots, no wildcards or spaces)", p)
	}
	return errors.Join(errs...)
}

// ConsumerConfig tunes a step runner; every consumer service embeds it. Its
// fields are step.Options' of the same names, and take their defaults
// (step.DefaultOptions), which Load fills in: the runtime and the
// environment have one set of defaults.
type ConsumerConfig struct {
	Concurrency   int           `env:"CONSUMER_CONCURRENCY"`
	BatchSize     int           `env:"CONSUMER_BATCH_SIZE"`
	BatchWait     time.Duration `env:"CONSUMER_BATCH_WAIT"`
	StragglerWait time.Duration `env:"CONSUMER_STRAGGLER_WAIT"`
	MaxInFlight   int           `env:"CONSUMER_MAX_IN_FLIGHT"`
	AckWait       time.Duration `env:"CONSUMER_ACK_WAIT"`
	MaxDeliveries int           `env:"CONSUMER_MAX_DELIVERIES"`
	StepTimeout   time.Duration `env:"CONSUMER_STEP_TIMEOUT"`
	BackoffBase   time.Duration `env:"CONSUMER_BACKOFF_BASE"`
	BackoffMax    time.Duration `env:"CONSUMER_BACKOFF_MAX"`
	MaxInlineSize int           `env:"MAX_INLINE_SIZE"`
}

// DefaultConsumerConfig is the consumer configuration of the runtime's
// defaults (step.DefaultOptions).
func DefaultConsumerConfig() ConsumerConfig {
	o := step.DefaultOptions()
	return ConsumerConfig{
		Concurrency: o.Concurrency, BatchSize: o.BatchSize, BatchWait: o.BatchWait, StragglerWait: o.StragglerWait,
		MaxInFlight: o.MaxInFlight, AckWait: o.AckWait, MaxDeliveries: o.MaxDeliveries, StepTimeout: o.StepTimeout,
		BackoffBase: o.BackoffBase, BackoffMax: o.BackoffMax, MaxInlineSize: o.MaxInlineSize,
	}
}

// Validator is implemented by service configs.
type Validator interface{ Validate() error }

// Load fills cfg, a pointer to a service config, from the environment and
// validates it. Fields already set are defaults for unset variables; the
// fields of an embedded ConsumerConfig and the stream settings of a Config
// that the service left zero take the runtime's defaults first.
func Load(cfg Validator) error {
	fillDefaults(reflect.ValueOf(cfg))
	if err := env.Parse(cfg); err != nil {
		var agg env.AggregateError
		if !errors.As(err, &agg) {
			return fmt.Errorf("config: %w", err)
		}
		errs := make([]error, 0, len(agg.Errors))
		for _, e := range agg.Errors {
			var pe env.ParseError
			if errors.As(e, &pe) {
				name := envName(reflect.TypeOf(cfg), pe.Name)
				if name == "" {
					name = pe.Name
				}
				e = fmt.Errorf("%s: %w", name, pe.Err)
			}
			errs = append(errs, fmt.Errorf("config: %w", e))
		}
		return errors.Join(errs...)
	}
	return cfg.Validate()
}

// fillDefaults gives the zero fields of every ConsumerConfig in v (a
// pointer to a config struct, or a struct field) the runtime's defaults,
// and the zero stream settings of every Config the events defaults.
func fillDefaults(v reflect.Value) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct || !v.CanSet() {
		return
	}
	switch v.Type() {
	case reflect.TypeFor[ConsumerConfig]():
		fillZero(v, reflect.ValueOf(DefaultConsumerConfig()))
		return
	case reflect.TypeFor[Config]():
		fillZero(v, reflect.ValueOf(streamDefaults()))
		return
	}
	for i := range v.NumField() {
		if v.Type().Field(i).IsExported() {
			fillDefaults(v.Field(i).Addr())
		}
	}
}

// fillZero sets each zero field of v to that of def, whose zero fields it
// leaves alone.
func fillZero(v, def reflect.Value) {
	for i := range v.NumField() {
		if f := v.Field(i); f.IsZero() && !def.Field(i).IsZero() && f.CanSet() {
			f.Set(def.Field(i))
		}
	}
}

// envName finds the variable that fills the struct field named field, in t
// or the structs it nests ("" when none does): parse errors name fields,
// users know variables.
func envName(t reflect.Type, field string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return ""
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); f.Name == field && name != "" {
			return name
		}
		if f.Type.Kind() == reflect.Struct {
			if name := envName(f.Type, field); name != "" {
				return name
			}
		}
	}
	return ""
}

// Validate names each bad setting.
func (c *Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: "+format, append([]any{name}, args...)...))
	}
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Tracing.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.NATSSetup != SetupAuto && c.NATSSetup != SetupOff {
		bad("NATS_SETUP", "%q is not %s or %s", c.NATSSetup, SetupAuto, SetupOff)
	}
	if c.DatabaseURL == "" {
		bad("DATABASE_URL", "must be set")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("METRICS_ADDR", "%q is not host:port", c.MetricsAddr)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "%q is not debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LOG_FORMAT", "%q is not json or text", c.LogFormat)
	}
	if c.ShutdownTimeout <= 0 {
		bad("SHUTDOWN_TIMEOUT", "must be positive")
	}
	if err := failpoint.Check(c.Failpoints); err != nil {
		bad("BLOBREF_FAILPOINTS", "%v", err)
	}
	if c.GCMinHeap != 0 && (c.GCMinHeap < runtimeHeapMinimum || c.GCMinHeap > maxGCMinHeap) {
		bad("GC_MIN_HEAP", "%d is neither 0 (Go's own) nor between %d (4 MiB) and %d (16 GiB) bytes",
			c.GCMinHeap, runtimeHeapMinimum, int64(maxGCMinHeap))
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("STREAM_REPLICAS", "%d is not between 1 and 5", c.StreamReplicas)
	}
	if c.StreamMaxAge <= 0 || c.DLQMaxAge <= 0 {
		bad("STREAM_MAX_AGE", "STREAM_MAX_AGE and DLQ_MAX_AGE must be positive")
	}
	for _, b := range []struct {
		name string
		n    int64
	}{{"STREAM_MAX_BYTES", c.StreamMaxBytes}, {"DLQ_MAX_BYTES", c.DLQMaxBytes}} {
		if b.n == 0 || b.n < -1 {
			bad(b.name, "%d is neither a number of bytes nor -1 (no bound)", b.n)
		}
	}
	return errors.Join(errs...)
}

// StreamOptions are the stream settings the config asks for.
func (c *Config) StreamOptions() events.StreamOptions {
	return events.StreamOptions{
		Replicas: c.StreamReplicas, MaxAge: c.StreamMaxAge, DLQMaxAge: c.DLQMaxAge,
		MaxBytes: c.StreamMaxBytes, DLQMaxBytes: c.DLQMaxBytes,
	}
}

// Validate names each bad setting.
func (c *ConsumerConfig) Validate() error {
	var errs []error
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("config: CONSUMER_CONCURRENCY: %d is not between 1 and 1024", c.Concurrency))
	}
	if c.BatchSize < 1 || c.BatchSize > 1024 {
		errs = append(errs, fmt.Errorf("config: CONSUMER_BATCH_SIZE: %d is not between 1 and 1024", c.BatchSize))
	}
	if c.BatchWait <= 0 || c.BatchWait > time.Second {
		errs = append(errs, fmt.Errorf("config: CONSUMER_BATCH_WAIT: %s is not between 0 and 1s", c.BatchWait))
	}
	if c.StragglerWait <= 0 {
		errs = append(errs, errors.New("config: CONSUMER_STRAGGLER_WAIT: must be positive"))
	}
	if c.MaxInFlight < c.BatchSize || c.MaxInFlight > 65536 {
		errs = append(errs, fmt.Errorf("config: CONSUMER_MAX_IN_FLIGHT: %d is not between CONSUMER_BATCH_SIZE and 65536", c.MaxInFlight))
	}
	if c.AckWait < time.Second {
		errs = append(errs, errors.New("config: CONSUMER_ACK_WAIT: must be at least 1s"))
	}
	if c.MaxDeliveries < 1 {
		errs = append(errs, errors.New("config: CONSUMER_MAX_DELIVERIES: must be at least 1"))
	}
	if c.StepTimeout <= 0 {
		errs = append(errs, errors.New("config: CONSUMER_STEP_TIMEOUT: must be positive"))
	}
	if c.BackoffBase <= 0 || c.BackoffMax < c.BackoffBase {
		errs = append(errs, errors.New("config: CONSUMER_BACKOFF_BASE: must be positive and not above CONSUMER_BACKOFF_MAX"))
	}
	if c.MaxInlineSize < 1 {
		errs = append(errs, errors.New("config: MAX_INLINE_SIZE: must be positive"))
	}
	return errors.Join(errs...)
}

// RunnerOptions are the step runner options the config asks for.
func (c *ConsumerConfig) RunnerOptions() step.Options {
	return step.Options{
		Concurrency:   c.Concurrency,
		BatchSize:     c.BatchSize,
		BatchWait:     c.BatchWait,
		StragglerWait: c.StragglerWait,
		MaxInFlight:   c.MaxInFlight,
		AckWait:       c.AckWait,
		MaxDeliveries: c.MaxDeliveries,
		StepTimeout:   c.StepTimeout,
		BackoffBase:   c.BackoffBase,
		BackoffMax:    c.BackoffMax,
		MaxInlineSize: c.MaxInlineSize,
	}
}

// Common returns c; service configs get it by embedding Config.
func (c *Config) Common() *Config { return c }
