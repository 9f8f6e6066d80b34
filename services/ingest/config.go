package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/stepservice"
	"github.com/blobref/blobref/services/ingest/internal/api"
	"github.com/blobref/blobref/services/ingest/internal/auth"
)

// headerRoom is what an inline request event needs beside its body: the
// ce- headers and Nats-Msg-Id. INLINE_THRESHOLD leaves it free below the
// consumers' inline limit and the server's max_payload.
const headerRoom = 64 << 10

// maxInlineThreshold is the largest INLINE_THRESHOLD.
const maxInlineThreshold = events.DefaultMaxInlineSize - headerRoom

type config struct {
	stepservice.Config
	// StagingConfig names the bucket large bodies are claim-checked in.
	service.StagingConfig

	// HTTPAddr is where the API listens.
	HTTPAddr string `env:"HTTP_ADDR" envDefault:":8080"`
	// AuthTokens are "token=caller[:scopes[:prefixes]]" entries,
	// comma-separated.
	AuthTokens string `env:"AUTH_TOKENS"`
	// AuthTokensFile holds one "token caller [scopes [prefixes]]" per line.
	AuthTokensFile string `env:"AUTH_TOKENS_FILE"`
	// AuthAllowWeakTokens lets ingest start with weak tokens (shorter than
	// 32 characters, or placeholders such as dev-token): for a development
	// machine only.
	AuthAllowWeakTokens bool `env:"AUTH_ALLOW_WEAK_TOKENS"`
	// MaxUploadSize is the largest body accepted (bytes, or with KiB, MiB,
	// GiB, KB, MB, GB): well below what the staging bucket and the
	// JetStream store hold, so that no single upload can fill them.
	MaxUploadSize byteSize `env:"MAX_UPLOAD_SIZE" envDefault:"1GiB"`
	// InlineThreshold is the largest body that travels inline in the event;
	// larger ones are staged in STAGING_BUCKET.
	InlineThreshold byteSize `env:"INLINE_THRESHOLD" envDefault:"512KiB"`
	// AllowedContentTypes is the allow-list of upload media types;
	// "type/*" and "*/*" are wildcards.
	AllowedContentTypes []string `env:"ALLOWED_CONTENT_TYPES" envSeparator:"," envDefault:"image/*,video/*,audio/*,application/pdf,application/octet-stream,text/plain"`
	// WaitMax caps Prefer: wait=N; 0 ignores the preference.
	WaitMax time.Duration `env:"WAIT_MAX" envDefault:"30s"`
	// RedriveAfter is how long an upload may be pending before a client's
	// retry publishes its request again.
	RedriveAfter time.Duration `env:"REDRIVE_AFTER" envDefault:"30s"`

	// ReadHeaderTimeout bounds the wait for a request's headers.
	ReadHeaderTimeout time.Duration `env:"HTTP_READ_HEADER_TIMEOUT" envDefault:"10s"`
	// BodyReadTimeout is the longest wait for the next bytes of a body
	// (408 past it); 0 disables it and BodyMinRate.
	BodyReadTimeout time.Duration `env:"BODY_READ_TIMEOUT" envDefault:"30s"`
	// BodyMinRate is the slowest a body may arrive, bytes per second (408
	// below it, past BODY_READ_TIMEOUT of grace); 0 disables it.
	BodyMinRate byteSize `env:"BODY_MIN_RATE" envDefault:"1KiB"`
	// DatabaseAcquireTimeout is the longest a request waits for a Postgres
	// connection (503 past it); 0 waits without end.
	DatabaseAcquireTimeout time.Duration `env:"DATABASE_ACQUIRE_TIMEOUT" envDefault:"2s"`
	// CallerMaxConcurrent is the most uploads one caller may have in
	// progress at once, per ingest process (429 past it); 0 is no limit.
	CallerMaxConcurrent int `env:"CALLER_MAX_CONCURRENT" envDefault:"64"`
	// CallerRate is the requests per second one caller may send on
	// average, per ingest process (429 past it); 0 is no limit.
	CallerRate float64 `env:"CALLER_RATE" envDefault:"200"`
	// CallerBurst is how many requests a caller may send at once above
	// CALLER_RATE.
	CallerBurst int `env:"CALLER_BURST" envDefault:"400"`
	// CallerMaxStagedBytes is the most bytes of large bodies one caller may
	// have staged and not yet stored, per ingest process (429 past it); 0
	// is no limit.
	CallerMaxStagedBytes byteSize `env:"CALLER_MAX_STAGED_BYTES" envDefault:"2GiB"`
	// CallerStagedHold is the longest a recorded upload's staged bytes
	// count against its caller's quota when ingest does not see it
	// complete.
	CallerStagedHold time.Duration `env:"CALLER_STAGED_HOLD" envDefault:"15m"`
	// CompleterInterval is how often the completer looks for uploads nobody
	// is finishing.
	CompleterInterval time.Duration `env:"COMPLETER_INTERVAL" envDefault:"30s"`
	// CompleterHorizon is how long an upload may be pending after its
	// publish before the completer publishes its request again.
	CompleterHorizon time.Duration `env:"COMPLETER_HORIZON" envDefault:"15m"`
}

// Validate names each bad setting.
func (c *config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: "+format, append([]any{name}, args...)...))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("HTTP_ADDR", "%q is not host:port", c.HTTPAddr)
	}
	if t, err := auth.Load(c.AuthTokens, c.AuthTokensFile); err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	} else if t.Len() == 0 {
		bad("AUTH_TOKENS", "no tokens: set AUTH_TOKENS or AUTH_TOKENS_FILE")
	} else if err := t.Weak(); err != nil && !c.AuthAllowWeakTokens {
		bad("AUTH_TOKENS", "weak tokens: use %d or more random characters (openssl rand -base64 32), "+
			"or set AUTH_ALLOW_WEAK_TOKENS=true on a development machine only: %w", auth.MinTokenLen, err)
	}
	if c.MaxUploadSize <= 0 {
		bad("MAX_UPLOAD_SIZE", "must be positive")
	}
	if c.InlineThreshold < 1 || c.InlineThreshold > maxInlineThreshold {
		bad("INLINE_THRESHOLD", "%d is not between 1 and %d", c.InlineThreshold, maxInlineThreshold)
	}
	if _, err := api.ParseMediaTypes(c.AllowedContentTypes); err != nil {
		bad("ALLOWED_CONTENT_TYPES", "%v", err)
	}
	if c.WaitMax < 0 {
		bad("WAIT_MAX", "must not be negative")
	}
	if c.RedriveAfter <= 0 {
		bad("REDRIVE_AFTER", "must be positive")
	}
	if c.ReadHeaderTimeout <= 0 {
		bad("HTTP_READ_HEADER_TIMEOUT", "must be positive")
	}
	for name, d := range map[string]time.Duration{"BODY_READ_TIMEOUT": c.BodyReadTimeout, "DATABASE_ACQUIRE_TIMEOUT": c.DatabaseAcquireTimeout} {
		if d < 0 {
			bad(name, "must not be negative")
		}
	}
	if c.CallerMaxConcurrent < 0 {
		bad("CALLER_MAX_CONCURRENT", "must not be negative")
	}
	if c.CallerRate < 0 || math.IsNaN(c.CallerRate) || math.IsInf(c.CallerRate, 0) {
		bad("CALLER_RATE", "must be a number of requests per second, 0 or more")
	}
	if c.CallerRate > 0 && c.CallerBurst < 1 {
		bad("CALLER_BURST", "must be at least 1 when CALLER_RATE is set")
	}
	if c.CallerMaxStagedBytes > 0 && c.CallerMaxStagedBytes < c.MaxUploadSize {
		bad("CALLER_MAX_STAGED_BYTES", "%d is less than MAX_UPLOAD_SIZE (%d): an upload that size could never be staged", c.CallerMaxStagedBytes, c.MaxUploadSize)
	}
	if c.CallerStagedHold <= 0 {
		bad("CALLER_STAGED_HOLD", "must be positive")
	}
	if c.CompleterInterval <= 0 {
		bad("COMPLETER_INTERVAL", "must be positive")
	}
	if c.CompleterHorizon < c.RedriveAfter || c.CompleterHorizon <= 0 {
		bad("COMPLETER_HORIZON", "%v is shorter than REDRIVE_AFTER (%v)", c.CompleterHorizon, c.RedriveAfter)
	}
	return errors.Join(append(errs, c.StagingConfig.Validate(), c.Config.Validate())...)
}

// byteSize is a size in bytes, read as a number with an optional unit.
type byteSize int64

var byteUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// UnmarshalText parses e.g. "1048576", "512KiB" or "5 GiB".
func (b *byteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	mult := int64(1)
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB, GiB, KB, MB or GB)", text)
	}
	*b = byteSize(n * mult)
	return nil
}
