package console_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/tools/blobrefctl/internal/pipelinetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pipelinetest.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
