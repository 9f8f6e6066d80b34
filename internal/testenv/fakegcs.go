package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"testing"

	"github.com/blobref/blobref/internal/testtools"
)

// FakeGCS is a Google Cloud Storage emulator (fake-gcs-server) on a
// loopback port, owned by one test, with one bucket created. It keeps the
// objects in a directory of the test's.
type FakeGCS struct {
	Host   string // 127.0.0.1:<port>, for STORAGE_EMULATOR_HOST
	Bucket string
	Dir    string // the server's storage directory

	proc *emulator
}

// StartFakeGCS starts fake-gcs-server and creates bucket; the test's
// cleanup stops it. The binary is testtools.FakeGCS's (make test-tools
// installs it, else the first test that needs it does). A test that cannot
// find or start it fails: it never skips.
func StartFakeGCS(t testing.TB, bucket string) *FakeGCS {
	t.Helper()
	bin, err := testtools.FakeGCS()
	if err != nil {
		t.Fatal(err)
	}
	g := &FakeGCS{Host: FreeAddr(t), Bucket: bucket, Dir: t.TempDir()}
	_, port, err := net.SplitHostPort(g.Host)
	if err != nil {
		t.Fatal(err)
	}
	g.proc = startEmulator(t, "fake-gcs-server", bin,
		"-scheme", "http", "-host", "127.0.0.1", "-port", port,
		"-public-host", g.Host, "-external-url", "http://"+g.Host,
		"-backend", "filesystem", "-filesystem-root", g.Dir,
		"-log-level", "info", // one line per request, which Writes counts
	)
	ctx, cancel := context.WithTimeout(context.Background(), emulatorStartTimeout)
	defer cancel()
	if err := g.proc.awaitHTTP(ctx, g.api("/storage/v1/b")); err != nil {
		t.Fatalf("fake-gcs-server on %s: %v\n%s", g.Host, err, g.proc.tail(40))
	}
	body, _ := json.Marshal(map[string]string{"name": bucket})
	resp, err := http.Post(g.api("/storage/v1/b?project=blobref-test"), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("fake-gcs-server: create bucket %s: %v", bucket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("fake-gcs-server: create bucket %s: %s: %s", bucket, resp.Status, b)
	}
	return g
}

// BlobURL is the gocloud.dev URL of the bucket, for BLOB_URL: gcsblob
// sends its requests to STORAGE_EMULATOR_HOST (see Env) without
// credentials when that variable is set.
func (g *FakeGCS) BlobURL() string { return "gs://" + g.Bucket }

// Env is the environment a service needs, besides BLOB_URL, to reach the
// bucket.
func (g *FakeGCS) Env() []string {
	return []string{"STORAGE_EMULATOR_HOST=" + g.Host}
}

func (g *FakeGCS) api(path string) string { return "http://" + g.Host + path }

// GCSObject is what the JSON API's objects.list says of an object.
// Generation is new on every write of the object.
type GCSObject struct {
	Name           string            `json:"name"`
	Generation     string            `json:"generation"`
	Metageneration string            `json:"metageneration"`
	Updated        string            `json:"updated"`
	ETag           string            `json:"etag"`
	MD5            string            `json:"md5Hash"`
	Size           string            `json:"size"`
	ContentType    string            `json:"contentType"`
	Metadata       map[string]string `json:"metadata"`
}

// Objects lists every object in the bucket, by name.
func (g *FakeGCS) Objects(t testing.TB) map[string]GCSObject {
	t.Helper()
	out := map[string]GCSObject{}
	token := ""
	for {
		q := url.Values{}
		if token != "" {
			q.Set("pageToken", token)
		}
		var page struct {
			Items         []GCSObject `json:"items"`
			NextPageToken string      `json:"nextPageToken"`
		}
		g.get(t, "/storage/v1/b/"+url.PathEscape(g.Bucket)+"/o?"+q.Encode(), func(r io.Reader) error {
			return json.NewDecoder(r).Decode(&page)
		})
		for _, o := range page.Items {
			out[o.Name] = o
		}
		if token = page.NextPageToken; token == "" {
			return out
		}
	}
}

// Read returns the bytes of object name.
func (g *FakeGCS) Read(t testing.TB, name string) []byte {
	t.Helper()
	var data []byte
	g.get(t, "/storage/v1/b/"+url.PathEscape(g.Bucket)+"/o/"+url.PathEscape(name)+"?alt=media", func(r io.Reader) (err error) {
		data, err = io.ReadAll(r)
		return err
	})
	return data
}

func (g *FakeGCS) get(t testing.TB, path string, read func(io.Reader) error) {
	t.Helper()
	resp, err := http.Get(g.api(path))
	if err != nil {
		t.Fatalf("fake-gcs-server: GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("fake-gcs-server: GET %s: %s: %s", path, resp.Status, b)
	}
	if err := read(resp.Body); err != nil {
		t.Fatalf("fake-gcs-server: GET %s: %v", path, err)
	}
}

// gcsWrite matches the request-log line of an upload that stores an
// object: a single-request upload (multipart or media), or the final PUT of
// a resumable one (a PUT of a chunk before the last answers 308).
var gcsWrite = regexp.MustCompile(`"(POST /upload/storage/v1/b/([^/?]+)/o\?\S*uploadType=(?:multipart|media)|PUT /upload/storage/v1/b/([^/?]+)/o\?\S*upload_id=)\S* HTTP/[0-9.]+\\?" (\d{3}) `)

// Writes is how many objects the server stored in the bucket, from its
// request log: uploads answered 200 (an upload refused by its precondition,
// such as ifGenerationMatch=0 on an existing object, answers 412).
func (g *FakeGCS) Writes(t testing.TB) int {
	t.Helper()
	n := 0
	for _, m := range gcsWrite.FindAllStringSubmatch(g.proc.log.String(), -1) {
		bucket := m[2] + m[3]
		if code, _ := strconv.Atoi(m[4]); bucket == g.Bucket && code == http.StatusOK {
			n++
		}
	}
	return n
}
