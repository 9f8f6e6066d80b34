package natsperms

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
)

// The users deploy/nats/nats.conf defines.
const (
	ingest     = "ingest"
	blobwriter = "blobwriter"
	refwriter  = "refwriter"
	notifier   = "notifier"
	setup      = "setup"
	admin      = "admin"
	sys        = "sys"
)

var users = []string{ingest, blobwriter, refwriter, notifier, setup, admin, sys}

// passwords holds each user's password, as its client sends it. The server
// reads it from <USER>_NATS_PASSWORD; admin's is there as a bcrypt hash, as
// deploy/README.md recommends, so both forms are tested.
var passwords = map[string]string{}

// passwordEnv is the environment variable nats.conf reads user's password
// from.
func passwordEnv(user string) string { return strings.ToUpper(user) + "_NATS_PASSWORD" }

func TestMain(m *testing.M) {
	// The server parses nats.conf, environment references included, when a
	// test starts it: every test sees these.
	for _, user := range users {
		var b [16]byte
		_, _ = rand.Read(b[:])
		pw := "pw" + hex.EncodeToString(b[:])
		passwords[user] = pw
		value := pw
		if user == admin {
			hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			value = string(hash)
		}
		if err := os.Setenv(passwordEnv(user), value); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	goleak.VerifyTestMain(m)
}
