package claimcheck_test

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/pkg/step"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// timeout is the suite's deadline for what a test waits on.
const timeout = 30 * time.Second

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// permanentReason returns the reason of the PermanentError in err's chain.
func permanentReason(err error) (string, bool) {
	var perm *step.PermanentError
	if errors.As(err, &perm) {
		return perm.Reason, true
	}
	return "", false
}
