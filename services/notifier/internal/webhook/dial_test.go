package webhook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestPublic(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"93.184.215.14": true, "2606:4700::1111": true, "8.8.8.8": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "fe80::1": false, "fd00::1": false, "0.0.0.0": false, "::": false,
		"100.64.0.1": false, "224.0.0.1": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false,
	} {
		if got := Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Public(%s): got %v, want %v", addr, got, want)
		}
	}
}

// The client refuses a loopback address when it dials, whatever name led
// there, and reaches it when private addresses are allowed.
func TestClientRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer srv.Close()
	for _, url := range []string{srv.URL, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)} {
		c := NewClient(5*time.Second, false)
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, nil)
		resp, err := c.Do(req)
		var refused *RefusedError
		if !errors.As(err, &refused) || !refused.Addr.IsLoopback() {
			t.Errorf("POST %s: got %v, %v; want refused as a loopback address", url, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
		c.CloseIdleConnections()

		c = NewClient(5*time.Second, true)
		req, _ = http.NewRequestWithContext(context.Background(), http.MethodPost, url, nil)
		resp, err = c.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Errorf("POST %s with private addresses allowed: got %v, %v; want 204", url, resp, err)
		} else {
			resp.Body.Close()
		}
		c.CloseIdleConnections()
	}
}

// A redirect is not followed: the 3xx is the answer.
func TestClientFollowsNoRedirect(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			t.Error("the redirect was followed")
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c := NewClient(5*time.Second, true)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("got %d, want 307", resp.StatusCode)
	}
}
