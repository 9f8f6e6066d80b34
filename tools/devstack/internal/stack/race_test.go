//go:build race

package stack

// raceEnabled builds the service binaries with -race too, as the e2e tests
// do, so they share the build cache and the services' races show here.
const raceEnabled = true
