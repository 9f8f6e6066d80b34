package testenv

import (
	"fmt"
	"strings"
	"testing"
)

func TestLogExcerpt(t *testing.T) {
	t.Parallel()
	var nats []string
	for i := range 30 {
		nats = append(nats, fmt.Sprintf("[1] 2026/04/05 10:00:%02d.000000 [INF] start-up line %d", i, i))
	}
	nats = append(nats, "[1] 2026/04/05 10:00:31.000000 [WRN] JetStream resource limits exceeded", "[1] 2026/04/05 10:00:32.000000 [INF] Server Exiting..")
	service := []string{
		`time=2026-04-05T10:00:00Z level=INFO msg=started service=blobwriter`,
		`time=2026-04-05T10:00:01Z level=ERROR msg="step failed" error="postgres: connection refused"`,
		`{"time":"2026-04-05T10:00:02Z","level":"INFO","msg":"acked"}`,
		`panic: runtime error: index out of range [3] with length 3`,
		`goroutine 1 [running]:`,
	}
	for _, tc := range []struct {
		name string
		log  []string
		max  int
		want string
	}{
		{"nats-server", nats, 20, "(the last 1 of 32 lines that are not at info level; go test -v shows all)\n" + nats[30]},
		{"service", service, 20, "(the last 3 of 5 lines that are not at info level; go test -v shows all)\n" +
			strings.Join([]string{service[1], service[3], service[4]}, "\n")},
		{"capped", service, 2, "(the last 2 of 5 lines that are not at info level; go test -v shows all)\n" + service[3] + "\n" + service[4]},
		{"quiet", nats[:30], 20, "(30 lines, none above info level; go test -v shows them)"},
		{"nothing routine", service[3:], 20, "(2 lines)\n" + service[3] + "\n" + service[4]},
		{"empty", nil, 20, "(empty)"},
	} {
		want := tc.want
		if testing.Verbose() && len(tc.log) > 0 {
			want = fmt.Sprintf("(%d lines)\n%s", len(tc.log), strings.Join(tc.log, "\n"))
		}
		if got := LogExcerpt(strings.Join(tc.log, "\n")+"\n", tc.max); got != want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, want)
		}
	}
}
