//go:build unix

package monitoring

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/blobref/blobref/internal/testenv"
)

// process is a running service binary.
type process struct {
	*testenv.Proc
	metrics string // METRICS_ADDR
}

// startService starts bin/name with env and a METRICS_ADDR of its own; the
// test's cleanup stops it and, if the test failed, shows its output.
func (p *pipeline) startService(t *testing.T, bin, name string, env []string) *process {
	t.Helper()
	metrics := testenv.FreeAddr(t)
	return &process{Proc: testenv.StartProc(t, name, filepath.Join(bin, name), nil, append(slices.Clone(env), "METRICS_ADDR="+metrics)), metrics: metrics}
}
