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
	// ShutdownTimeout bounds graceful shutdown after SIGTERM.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s"`
	// NATSSetup says who creates the streams, the staging bucket and the
	// durable consumers: SetupAuto (the service, at start-up) or SetupOff
	// (an operator, with blobrefctl setup; the service only looks them up).
	NATSSetup string `env:"NATS_SETUP" envDefault:"auto"`
	// Failpoints arms failpoints for crash tests (see package failpoint).
	// Only test builds (-tags blobref_failpoints) have them; a release
	// build refuses a non-empty value.
	Failpoints string `env:"BLOBREF_FAILPOINTS"`

	// StreamReplicas is the replica count of UPLOADS and UPLOADS_DLQ when a
	// service creates them (3 on a JetStream cluster).
	StreamReplicas int `env:"STREAM_REPLICAS" envDefault:"1"`
	// StreamMaxAge is how long UPLOADS keeps events for replay.
	StreamMaxAge time.Duration `env:"STREAM_MAX_AGE" envDefault:"168h"`
	// DLQMaxAge is how long UPLOADS_DLQ keeps dead letters.
	DLQMaxAge time.Duration `env:"DLQ_MAX_AGE" envDefault:"720h"`
	// StreamMaxBytes bounds what UPLOADS stores, in bytes; -1 is no bound.
	// Full, it refuses new events: uploads wait, none is dropped.
	StreamMaxBytes int64 `env:"STREAM_MAX_BYTES" envDefault:"1073741824"`
	// DLQMaxBytes bounds what UPLOADS_DLQ stores, in bytes; -1 is no bound.
	DLQMaxBytes int64 `env:"DLQ_MAX_BYTES" envDefault:"268435456"`
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

// Validate names the first bad setting.
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

// ConsumerConfig tunes a step runner; every consumer service embeds it.
type ConsumerConfig struct {
	Concurrency   int           `env:"CONSUMER_CONCURRENCY" envDefault:"8"`
	BatchSize     int           `env:"CONSUMER_BATCH_SIZE" envDefault:"64"`
	BatchWait     time.Duration `env:"CONSUMER_BATCH_WAIT" envDefault:"2ms"`
	StragglerWait time.Duration `env:"CONSUMER_STRAGGLER_WAIT" envDefault:"1s"`
	MaxInFlight   int           `env:"CONSUMER_MAX_IN_FLIGHT" envDefault:"256"`
	AckWait       time.Duration `env:"CONSUMER_ACK_WAIT" envDefault:"30s"`
	MaxDeliveries int           `env:"CONSUMER_MAX_DELIVERIES" envDefault:"20"`
	StepTimeout   time.Duration `env:"CONSUMER_STEP_TIMEOUT" envDefault:"5m"`
	BackoffBase   time.Duration `env:"CONSUMER_BACKOFF_BASE" envDefault:"1s"`
	BackoffMax    time.Duration `env:"CONSUMER_BACKOFF_MAX" envDefault:"5m"`
	MaxInlineSize int           `env:"MAX_INLINE_SIZE" envDefault:"1048576"`
}

// Validator is implemented by service configs.
type Validator interface{ Validate() error }

// Load fills cfg, a pointer to a service config, from the environment and
// validates it. Fields already set are defaults for unset variables.
func Load(cfg Validator) error {
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

// Validate names the first bad setting.
func (c *Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: "+format, append([]any{name}, args...)...))
	}
	if err := c.NATS.Validate(); err != nil {
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

// Validate names the first bad setting.
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
