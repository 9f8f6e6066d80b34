package testenv

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// logExcerptLines is how many lines of a server's or service's log a failed
// test shows.
const logExcerptLines = 20

// routine matches the log lines a failed test leaves out: info, debug and
// trace lines of nats-server ([INF]) and of the services' slog output (text
// or JSON). Warnings, errors, panics and anything else unrecognised stay.
var routine = regexp.MustCompile(`\[(INF|DBG|TRC)\] |\blevel=(INFO|DEBUG)\b|"level":"(INFO|DEBUG)"`)

// LogExcerpt is what a failed test shows of a log: its last max lines that
// are not routine (see routine), after a line that says how much it left
// out. Under go test -v it is the whole log.
func LogExcerpt(log string, max int) string {
	log = strings.TrimRight(log, "\n")
	if log == "" {
		return "(empty)"
	}
	lines := strings.Split(log, "\n")
	if testing.Verbose() {
		return fmt.Sprintf("(%d lines)\n%s", len(lines), log)
	}
	var kept []string
	for _, l := range lines {
		if !routine.MatchString(l) {
			kept = append(kept, l)
		}
	}
	if len(kept) > max {
		kept = kept[len(kept)-max:]
	}
	switch {
	case len(kept) == len(lines):
		return fmt.Sprintf("(%d lines)\n%s", len(lines), log)
	case len(kept) == 0:
		return fmt.Sprintf("(%d lines, none above info level; go test -v shows them)", len(lines))
	}
	return fmt.Sprintf("(the last %d of %d lines that are not at info level; go test -v shows all)\n%s",
		len(kept), len(lines), strings.Join(kept, "\n"))
}

// ShowLog logs an excerpt of what name logged (LogExcerpt), if t has
// failed. Called from a cleanup, it comes after the failure itself.
func ShowLog(t testing.TB, name, log string) {
	t.Helper()
	if t.Failed() {
		t.Logf("--- %s log %s", name, LogExcerpt(log, logExcerptLines))
	}
}
