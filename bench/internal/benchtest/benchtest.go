// Package benchtest holds what the benchmarks' smoke tests share.
package benchtest

import (
	"os"
	"strings"
	"testing"
)

// DatabaseURL is the Postgres the tests use, as everywhere in blobref:
// BLOBREF_TEST_DATABASE_URL, or the local test database.
func DatabaseURL() string {
	if u := os.Getenv("BLOBREF_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// LogWriter passes a benchmark's progress lines to the test log.
type LogWriter struct{ T testing.TB }

func (w LogWriter) Write(p []byte) (int, error) {
	w.T.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
