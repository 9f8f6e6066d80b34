//go:build race

package natsperms

// raceEnabled builds the service binaries with -race too, as the e2e and
// stack tests do, so they share the build cache and the services' races
// show here.
const raceEnabled = true
