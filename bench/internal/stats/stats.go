// Package stats summarises benchmark samples: percentiles of latencies and
// the median and spread of repeated runs.
package stats

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 < p <= 100) of samples by the
// nearest-rank method: the smallest sample that at least p percent of the
// samples do not exceed. It returns 0 for no samples. samples need not be
// sorted; it is not modified.
func Percentile[T cmp.Ordered](samples []T, p float64) T {
	if len(samples) == 0 {
		var zero T
		return zero
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	return nearestRank(sorted, p)
}

// Percentiles returns several percentiles of samples, sorting them once.
func Percentiles[T cmp.Ordered](samples []T, ps ...float64) []T {
	out := make([]T, len(ps))
	if len(samples) == 0 {
		return out
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	for i, p := range ps {
		out[i] = nearestRank(sorted, p)
	}
	return out
}

func nearestRank[T any](sorted []T, p float64) T {
	rank := int(p/100*float64(len(sorted)) + 0.9999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Summary is the median and range of repeated measurements.
type Summary struct {
	Median, Min, Max float64
	N                int
}

// Summarize returns the median (the mean of the middle two of an even
// count), minimum and maximum of values.
func Summarize(values []float64) Summary {
	if len(values) == 0 {
		return Summary{}
	}
	s := slices.Clone(values)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Summary{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Spread is half the range relative to the median, in percent: the "±" of
// the median.
func (s Summary) Spread() float64 {
	if s.Median == 0 {
		return 0
	}
	return (s.Max - s.Min) / 2 / s.Median * 100
}

// Millis is d in milliseconds.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Range writes s as "median (min–max)", each number with format (e.g.
// "%.0f"); the median alone for one value, "-" for none.
func (s Summary) Range(format string) string {
	switch s.N {
	case 0:
		return "-"
	case 1:
		return fmt.Sprintf(format, s.Median)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.Median, s.Min, s.Max)
}

// WithSpread writes s as "median ±spread%" (the median alone for one
// value, "-" for none).
func (s Summary) WithSpread(format string) string {
	switch s.N {
	case 0:
		return "-"
	case 1:
		return fmt.Sprintf(format, s.Median)
	}
	return fmt.Sprintf(format+" ±%.0f%%", s.Median, s.Spread())
}
