package api

import (
	"net/http"
	"testing"
	"time"
)

func TestParseWait(t *testing.T) {
	t.Parallel()
	const max = 30 * time.Second
	for _, tc := range []struct {
		prefer []string
		want   time.Duration
		ok     bool
	}{
		{nil, 0, false},
		{[]string{"wait=10"}, 10 * time.Second, true},
		{[]string{"respond-async, wait=5"}, 5 * time.Second, true},
		{[]string{"return=minimal", "Wait = 7"}, 7 * time.Second, true},
		{[]string{`wait="3"`}, 3 * time.Second, true},
		{[]string{"wait=100"}, max, true},
		{[]string{"wait=99999999999999999"}, max, true},
		{[]string{"wait=999999999999999999999"}, 0, false},
		{[]string{"wait=9999999999"}, max, true},
		{[]string{"wait=0"}, 0, false},
		{[]string{"wait=-1"}, 0, false},
		{[]string{"wait=soon"}, 0, false},
		{[]string{"waiting=5"}, 0, false},
	} {
		got, ok := parseWait(tc.prefer, max)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseWait(%q): got %v %v, want %v %v", tc.prefer, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := parseWait([]string{"wait=5"}, 0); ok {
		t.Error("parseWait with WAIT_MAX=0: applied, want ignored")
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"abc":                  "abc",
		" abc ":                "abc",
		`"8e03978e-40d5-43e8"`: "8e03978e-40d5-43e8",
		`"a\"b\\c"`:            `a"b\c`,
		`"a b"`:                "a b",
		`"`:                    `"`,
	} {
		got, err := parseKey([]string{in})
		if err != nil || got != want {
			t.Errorf("parseKey(%q): got %q %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", `""`, `"a\b"`, `"a"b"`, "tab\there", "é"} {
		if got, err := parseKey([]string{in}); err == nil {
			t.Errorf("parseKey(%q): got %q, want an error", in, got)
		}
	}
}

func TestMediaTypes(t *testing.T) {
	t.Parallel()
	m, err := ParseMediaTypes([]string{"image/*", " application/PDF ", "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	for mt, want := range map[string]bool{
		"image/png": true, "image/svg+xml": true, "application/pdf": true, "text/plain": true,
		"text/html": false, "application/octet-stream": false, "imagex/png": false,
		"image": false, "image/": false, // a type without a subtype is no media type
	} {
		if got := m.Allows(mt); got != want {
			t.Errorf("Allows(%q): got %v, want %v", mt, got, want)
		}
	}
	all, _ := ParseMediaTypes([]string{"*/*"})
	if !all.Allows("application/x-anything") {
		t.Error("*/* does not allow everything")
	}
	for _, bad := range [][]string{{"image"}, {"*/png"}, {"image/"}, {}, {"a b/c"}, {"0/0*"}, {"image/x*"}, {"ima*/*"}} {
		if _, err := ParseMediaTypes(bad); err == nil {
			t.Errorf("ParseMediaTypes(%q): got no error", bad)
		}
	}
}

func TestProblemForUnknownErrorsHidesThem(t *testing.T) {
	t.Parallel()
	p := problemFor(errString("pq: password authentication failed for user postgres"), 1)
	if p.Status != http.StatusInternalServerError || p.Detail == "" || p.Type != ProblemTypeBase+"internal" {
		t.Errorf("problem: got %+v, want a 500 of type internal", p)
	}
	if len(p.header) != 0 {
		t.Errorf("headers: got %v", p.header)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
