package testenv

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testtools"
)

// The account Azurite serves by default, and its well-known key.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// azuriteAPIVersion is the x-ms-version of testenv's own requests.
const azuriteAPIVersion = "2021-08-06"

// Azurite is an Azure Blob Storage emulator on a loopback port, owned by
// one test, with one container created. It keeps the blobs in a directory
// of the test's.
type Azurite struct {
	Host      string // 127.0.0.1:<port>
	Container string
	Dir       string // the server's workspace directory

	proc *emulator
}

// StartAzurite starts Azurite's blob service and creates container; the
// test's cleanup stops it. The program is testtools.Azurite's (make
// test-tools installs it, else the first test that needs it does). A test
// that cannot find or start it fails: it never skips.
func StartAzurite(t testing.TB, container string) *Azurite {
	t.Helper()
	bin, err := testtools.Azurite()
	if err != nil {
		t.Fatal(err)
	}
	a := &Azurite{Host: FreeAddr(t), Container: container, Dir: t.TempDir()}
	_, port, err := net.SplitHostPort(a.Host)
	if err != nil {
		t.Fatal(err)
	}
	// Not --silent: the access log on stdout is what Writes counts.
	a.proc = startEmulator(t, "azurite", bin,
		"--blobHost", "127.0.0.1", "--blobPort", port, "--location", a.Dir,
		"--skipApiVersionCheck", // the Go SDK may be newer than the emulator
		"--disableTelemetry",
	)
	ctx, cancel := context.WithTimeout(context.Background(), emulatorStartTimeout)
	defer cancel()
	if err := a.proc.awaitHTTP(ctx, a.url("", nil)); err != nil {
		t.Fatalf("azurite on %s: %v\n%s", a.Host, err, a.proc.tail(40))
	}
	resp := a.do(t, http.MethodPut, "", url.Values{"restype": {"container"}})
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("azurite: create container %s: %s", container, resp.Status)
	}
	return a
}

// BlobURL is the gocloud.dev URL of the container, for BLOB_URL: localemu
// makes azureblob address the emulator's path-style URL
// http://<domain>/<account>/<container>, which it allows only on loopback.
func (a *Azurite) BlobURL() string {
	q := url.Values{}
	q.Set("localemu", "true")
	q.Set("protocol", "http")
	q.Set("domain", a.Host)
	return "azblob://" + a.Container + "?" + q.Encode()
}

// Env is the environment a service needs, besides BLOB_URL, to reach the
// container: the account and its shared key.
func (a *Azurite) Env() []string {
	return []string{"AZURE_STORAGE_ACCOUNT=" + AzuriteAccount, "AZURE_STORAGE_KEY=" + AzuriteKey}
}

// AzureBlob is what List Blobs says of a blob. ETag is new on every write
// of the blob.
type AzureBlob struct {
	Name       string `xml:"Name"`
	Properties struct {
		ETag         string `xml:"Etag"`
		LastModified string `xml:"Last-Modified"`
		Created      string `xml:"Creation-Time"`
		Length       int64  `xml:"Content-Length"`
		ContentType  string `xml:"Content-Type"`
		MD5          string `xml:"Content-MD5"`
	} `xml:"Properties"`
	Metadata struct {
		Items []struct {
			XMLName xml.Name
			Value   string `xml:",chardata"`
		} `xml:",any"`
	} `xml:"Metadata"`
}

// Meta returns the blob's metadata value for key, as stored.
func (b AzureBlob) Meta(key string) string {
	for _, it := range b.Metadata.Items {
		if it.XMLName.Local == key {
			return it.Value
		}
	}
	return ""
}

// Blobs lists every blob in the container, by name, with its metadata.
func (a *Azurite) Blobs(t testing.TB) map[string]AzureBlob {
	t.Helper()
	out := map[string]AzureBlob{}
	marker := ""
	for {
		q := url.Values{"restype": {"container"}, "comp": {"list"}, "include": {"metadata"}}
		if marker != "" {
			q.Set("marker", marker)
		}
		resp := a.do(t, http.MethodGet, "", q)
		var page struct {
			Blobs      []AzureBlob `xml:"Blobs>Blob"`
			NextMarker string      `xml:"NextMarker"`
		}
		err := a.decode(resp, func(r io.Reader) error { return xml.NewDecoder(r).Decode(&page) })
		if err != nil {
			t.Fatalf("azurite: list blobs: %v", err)
		}
		for _, b := range page.Blobs {
			out[b.Name] = b
		}
		if marker = page.NextMarker; marker == "" {
			return out
		}
	}
}

// Read returns the bytes of blob name.
func (a *Azurite) Read(t testing.TB, name string) []byte {
	t.Helper()
	var data []byte
	err := a.decode(a.do(t, http.MethodGet, name, nil), func(r io.Reader) (err error) {
		data, err = io.ReadAll(r)
		return err
	})
	if err != nil {
		t.Fatalf("azurite: read %s: %v", name, err)
	}
	return data
}

// azureWrite matches the access-log line of a request that stores a blob:
// Put Blob (no comp), Put Block List (comp=blocklist), and the status.
// Put Block only stages a block.
var azureWrite = regexp.MustCompile(`"PUT /([^/ ?]+)/([^/ ?]+)/([^ ?]+)(\?[^ ]*)? HTTP/[0-9.]+" (\d{3}) `)

// Writes is how many blobs the server stored in the container, from its
// access log: Put Blob and Put Block List answered 201 (a write refused by
// its condition, such as If-None-Match: * on an existing blob, answers 409).
func (a *Azurite) Writes(t testing.TB) int {
	t.Helper()
	n := 0
	for _, m := range azureWrite.FindAllStringSubmatch(a.proc.log.String(), -1) {
		query, _ := url.ParseQuery(strings.TrimPrefix(m[4], "?"))
		comp := query.Get("comp")
		if m[1] == AzuriteAccount && m[2] == a.Container && m[5] == "201" && (comp == "" || comp == "blocklist") {
			n++
		}
	}
	return n
}

func (a *Azurite) url(blob string, q url.Values) string {
	u := url.URL{Scheme: "http", Host: a.Host, Path: "/" + AzuriteAccount + "/" + a.Container, RawQuery: q.Encode()}
	if blob != "" {
		u.Path += "/" + blob
	}
	return u.String()
}

// do sends a request without a body to the container (blob "") or one of
// its blobs, signed with the account's shared key.
func (a *Azurite) do(t testing.TB, method, blob string, q url.Values) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, a.url(blob, q), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.sign(req, time.Now().UTC())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("azurite: %s %s: %v", method, req.URL, err)
	}
	return resp
}

func (a *Azurite) decode(resp *http.Response, read func(io.Reader) error) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return read(resp.Body)
}

// sign adds the Shared Key authorization of Azure Storage to req, which has
// an empty body. It is the one kind of request testenv makes, so it signs
// by hand rather than bring the Azure SDK into every module whose tests
// use testenv.
func (a *Azurite) sign(req *http.Request, now time.Time) {
	req.Header.Set("x-ms-date", now.Format(http.TimeFormat))
	req.Header.Set("x-ms-version", azuriteAPIVersion)
	var headers []string
	for k := range req.Header {
		if k := strings.ToLower(k); strings.HasPrefix(k, "x-ms-") {
			headers = append(headers, k)
		}
	}
	sort.Strings(headers)
	var b strings.Builder
	// VERB, then Content-Encoding, -Language, -Length, -MD5, -Type, Date,
	// If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since and
	// Range, all empty here.
	b.WriteString(req.Method + "\n" + strings.Repeat("\n", 11))
	for _, k := range headers {
		b.WriteString(k + ":" + req.Header.Get(k) + "\n")
	}
	b.WriteString("/" + AzuriteAccount + req.URL.Path)
	q := req.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString("\n" + strings.ToLower(k) + ":" + strings.Join(q[k], ","))
	}
	key, _ := base64.StdEncoding.DecodeString(AzuriteKey)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(b.String()))
	req.Header.Set("Authorization", "SharedKey "+AzuriteAccount+":"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
}
