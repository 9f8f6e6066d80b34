// Package failpoint forwards to package failpoint of the step runtime
// (github.com/blobref/blobref/pkg/step/failpoint), where it moved, until
// every caller imports it from there.
package failpoint

import "github.com/blobref/blobref/pkg/step/failpoint"

// Moved to github.com/blobref/blobref/pkg/step/failpoint.
const (
	BuildTag = failpoint.BuildTag
	Compiled = failpoint.Compiled
)

// Moved to github.com/blobref/blobref/pkg/step/failpoint.
var (
	ErrInjected    = failpoint.ErrInjected
	ErrNotCompiled = failpoint.ErrNotCompiled
	Enable         = failpoint.Enable
	Check          = failpoint.Check
	Inject         = failpoint.Inject
)
