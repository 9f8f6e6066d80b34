//go:build race

package testenv

// RaceEnabled reports whether the tests run with the race detector; the
// service binaries they build get it too.
const RaceEnabled = true
