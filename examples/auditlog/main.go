// Command auditlog appends a line to AUDIT_LOG per completed upload, once however often it is delivered.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/stepservice"
)

type config struct {
	stepservice.StepConfig
	AuditLog string `env:"AUDIT_LOG" envDefault:"audit.log"`
}

// Audit is the step. A crash after the append, before its marker, appends the line again.
func Audit(path string) step.Step[string] {
	return step.Step[string]{Name: "audit", Consumes: events.TypeCompleted, // no Emit: it ends the chain
		Effect: func(_ context.Context, ev *events.Event) (string, error) {
			line := fmt.Sprintf("%s %s %s %s\n", ev.ID, ev.Owner, ev.Subject, ev.Ref.Blob.Key)
			f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600) // #nosec G304 -- the operator names the file
			if err != nil {
				return "", err
			}
			_, err = f.WriteString(line)
			return line, errors.Join(err, f.Close())
		}}
}

func main() {
	stepservice.Main("auditlog", &config{}, func(ctx context.Context, c *config, log *slog.Logger) error {
		return stepservice.Run(ctx, "auditlog", &c.Config, &c.ConsumerConfig, log,
			func(stepservice.Deps) (step.Step[string], error) { return Audit(c.AuditLog), nil })
	})
}
