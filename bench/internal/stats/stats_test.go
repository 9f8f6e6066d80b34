package stats

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	samples := make([]time.Duration, 100)
	for i := range samples {
		samples[i] = time.Duration(100-i) * time.Millisecond // 100ms … 1ms, unsorted
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 1: time.Millisecond} {
		if got := Percentile(samples, p); got != want {
			t.Errorf("p%v: got %v, want %v", p, got, want)
		}
	}
	if got := Percentiles([]int{7}, 50, 99); got[0] != 7 || got[1] != 7 {
		t.Errorf("one sample: got %v, want [7 7]", got)
	}
	if got := Percentile([]int(nil), 50); got != 0 {
		t.Errorf("no samples: got %v, want 0", got)
	}
	if samples[0] != 100*time.Millisecond {
		t.Errorf("Percentile sorted its input")
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	s := Summarize([]float64{300, 100, 200})
	if s.Median != 200 || s.Min != 100 || s.Max != 300 || s.N != 3 {
		t.Errorf("got %+v, want median 200 in [100, 300] of 3", s)
	}
	if got := s.Spread(); math.Abs(got-50) > 1e-9 {
		t.Errorf("spread: got %v, want 50", got)
	}
	if got := Summarize([]float64{1, 2, 3, 4}).Median; got != 2.5 {
		t.Errorf("median of an even count: got %v, want 2.5", got)
	}
}

func TestFormats(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		values          []float64
		rng, withSpread string
	}{
		{[]float64{3, 1, 2}, "2 (1–3)", "2 ±50%"},
		{[]float64{5}, "5", "5"},
		{nil, "-", "-"},
		{[]float64{110, 90, 100}, "100 (90–110)", "100 ±10%"},
	} {
		s := Summarize(tc.values)
		if got := s.Range("%.0f"); got != tc.rng {
			t.Errorf("%v: Range got %q, want %q", tc.values, got, tc.rng)
		}
		if got := s.WithSpread("%.0f"); got != tc.withSpread {
			t.Errorf("%v: WithSpread got %q, want %q", tc.values, got, tc.withSpread)
		}
	}
}
