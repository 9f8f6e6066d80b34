package stack

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Demo is an upload request as the NATS CLI sends it in CloudEvents binary
// content mode: the bytes as the body, the attributes as ce- headers.
type Demo struct {
	Subject string
	Data    []byte
	// Headers are name/value pairs in the order the command shows them.
	Headers [][2]string
}

// DemoUpload is the request devstack suggests as a first upload: "hello"
// for users/42/avatar, under upload id id, sent at now.
func DemoUpload(id string, now time.Time) Demo {
	data := []byte("hello")
	sum := sha256.Sum256(data)
	return Demo{
		Subject: "uploads.requested." + id,
		Data:    data,
		Headers: [][2]string{
			{"ce-specversion", "1.0"},
			{"ce-id", id},
			{"ce-type", "io.blobref.upload.requested.v1"},
			{"ce-source", "/cli"},
			{"ce-subject", "users/42/avatar"},
			{"ce-time", now.UTC().Format(time.RFC3339)},
			{"ce-datacontenttype", "text/plain"},
			{"ce-sha256", hex.EncodeToString(sum[:])},
			{"Nats-Msg-Id", id},
		},
	}
}

// Command is the `nats pub` command line that publishes d to the server at
// natsURL (the CLI's default server needs no -s).
func (d Demo) Command(natsURL string) string {
	var b strings.Builder
	b.WriteString("nats")
	if natsURL != "" && natsURL != "nats://127.0.0.1:4222" {
		b.WriteString(" -s " + natsURL)
	}
	b.WriteString(" pub " + d.Subject + " '" + string(d.Data) + "'")
	for _, h := range d.Headers {
		b.WriteString(" -H " + h[0] + ":" + h[1])
	}
	return b.String()
}

// DemoCurl is the curl command line devstack suggests as a first upload over
// HTTP: "hello" for users/42/avatar, sent to ingest at baseURL with token
// (inside double quotes: "$TOKEN" expands), waiting up to 10s for the
// answer with the reference: 201 Created, or 200 when run again, since the
// same key is the same upload.
func DemoCurl(baseURL, token string) string {
	return "curl -sS -i '" + baseURL + "/v1/uploads?subject=users/42/avatar'" +
		" -H \"Authorization: Bearer " + token + "\" -H 'Idempotency-Key: first-upload'" +
		" -H 'Content-Type: text/plain' -H 'Prefer: wait=10' --data-binary 'hello'"
}
