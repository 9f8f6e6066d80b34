package load

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSetIndex(t *testing.T) {
	t.Parallel()
	s, err := NewSet("p-", 3, 64, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if got := s.Index(s.ID(i)); got != i {
			t.Errorf("Index(%q): got %d, want %d", s.ID(i), got, i)
		}
	}
	for _, id := range []string{"p-00000003", "q-00000000", "p-0", "p-abcdefgh"} {
		if got := s.Index(id); got != -1 {
			t.Errorf("Index(%q): got %d, want -1", id, got)
		}
	}
	if s.Uploads[0].Request.SHA256 == s.Uploads[1].Request.SHA256 {
		t.Error("two uploads share a fingerprint")
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	r, err := Summarize([]int64{100, 200, 300}, []int64{1100, 1300, 2300})
	if err != nil {
		t.Fatal(err)
	}
	if r.N != 3 || r.Elapsed != 2200 || r.Latency != [3]time.Duration{1100, 2000, 2000} {
		t.Errorf("got %+v, want 3 uploads in 2.2µs, latencies 1.1µs, 2µs, 2µs", r)
	}
	if _, err := Summarize([]int64{1}, []int64{0}); err == nil {
		t.Error("got nil, want an error for an upload that did not complete")
	}
}
