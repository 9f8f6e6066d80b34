package monitoring

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// repoRoot is the directory holding go.work.
var repoRoot = testenv.RepoRoot

// The files under test, relative to the repository's root.
var (
	alertsFile    = filepath.Join("deploy", "monitoring", "alerts.yaml")
	dashboardFile = filepath.Join("deploy", "monitoring", "dashboard.json")
)

// httpClient is the tests' client: no connection outlives a request, so no
// goroutine outlives a test.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
