package natsperms

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/pkg/step"
)

// TestTLS turns on the TLS block of deploy/nats/tls.conf as its comments
// say (uncomment nats.conf's include line, mount the certificates), with
// certificates from a throwaway CA, and connects as a service does with
// NATS_CA.
func TestTLS(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	dir := t.TempDir()
	ca := writeCerts(t, dir)

	conf := readFile(t, filepath.Join(root, "deploy", "nats", "nats.conf"))
	const include = "# include ./tls.conf\n"
	if strings.Count(conf, include) != 1 {
		t.Fatalf("nats.conf: want one commented-out line %q", include)
	}
	tlsConf := readFile(t, filepath.Join(root, "deploy", "nats", "tls.conf"))
	const mount = "/etc/nats/tls/"
	if !strings.Contains(tlsConf, mount) {
		t.Fatalf("tls.conf: names no file under %s", mount)
	}
	writeFile(t, filepath.Join(dir, "nats.conf"), strings.Replace(conf, include, include[2:], 1))
	writeFile(t, filepath.Join(dir, "tls.conf"), strings.ReplaceAll(tlsConf, mount, dir+"/"))

	n := startServer(t, filepath.Join(dir, "nats.conf"))
	setUp(t, n.url(), step.Options{}, nats.RootCAs(ca))
	c := connect(t, n.url(), ingest, nats.RootCAs(ca))
	if !c.nc.TLSRequired() {
		t.Error("the server does not require TLS")
	}
	if _, err := c.nc.TLSConnectionState(); err != nil {
		t.Errorf("connection state: %v", err)
	}
	lookUp(t, c)
	c.checkNoViolations(t)

	// Without the CA the server's certificate is not trusted.
	if nc, err := nats.Connect(n.url(), nats.UserInfo(ingest, passwords[ingest]), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("connected without NATS_CA, want a certificate error")
	}
}

// writeCerts writes ca.crt, tls.crt and tls.key (the names tls.conf uses)
// into dir: a CA and a certificate it signed for 127.0.0.1 and localhost.
// It returns the CA's path.
func writeCerts(t *testing.T, dir string) string {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, key := newKey(), newKey()
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "blobref test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "nats"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := func(name, typ string, b []byte) string {
		path := filepath.Join(dir, name)
		writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})))
		return path
	}
	pemFile("tls.crt", "CERTIFICATE", der)
	pemFile("tls.key", "EC PRIVATE KEY", keyDER)
	return pemFile("ca.crt", "CERTIFICATE", caDER)
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
