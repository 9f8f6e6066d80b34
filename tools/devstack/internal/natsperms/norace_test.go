//go:build !race

package natsperms

const raceEnabled = false
