//go:build !blobref_failpoints

package failpoint

import (
	"context"
	"strings"
)

// Compiled reports whether this binary has failpoints: it was built with
// the build tag blobref_failpoints.
const Compiled = false

// Enable refuses a specification that names any failpoint: this build has
// none. An empty one (or only separators) is fine.
func Enable(spec string) error { return Check(spec) }

// Check refuses a specification that names any failpoint: this build has
// none.
func Check(spec string) error {
	if strings.Trim(spec, "; \t\n") != "" {
		return ErrNotCompiled
	}
	return nil
}

// Inject does nothing: this build has no failpoints.
func Inject(context.Context, string) error { return nil }
