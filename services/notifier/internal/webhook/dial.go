package webhook

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// RefusedError is a connection the client would not make: to a loopback,
// private, link-local or otherwise internal address.
type RefusedError struct {
	Addr netip.Addr
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused to connect to %s: not a public address (NOTIFIER_ALLOW_PRIVATE allows it)", e.Addr)
}

// carrierNAT is the shared address space of RFC 6598 (100.64.0.0/10),
// internal to a provider's network.
var carrierNAT = netip.MustParsePrefix("100.64.0.0/10")

// Public reports whether a is an address a webhook may be delivered to:
// not loopback, private (RFC 1918, RFC 4193), link-local (cloud metadata
// services live there), carrier NAT, multicast or unspecified.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsLoopback() && !a.IsPrivate() && !a.IsLinkLocalUnicast() &&
		!a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast() && !a.IsMulticast() &&
		!a.IsUnspecified() && !carrierNAT.Contains(a)
}

// guard is a net.Dialer Control: it runs after name resolution, on the
// address about to be connected to, so a name that resolves (or is
// re-pointed, DNS rebinding) to an internal address is refused too.
func guard(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("refused to connect to %q: not an IP address and port", address)
	}
	if !Public(ap.Addr()) {
		return &RefusedError{Addr: ap.Addr().Unmap()}
	}
	return nil
}

// NewClient returns the HTTP client deliveries go through: requests time
// out after timeout, redirects are not followed (a 3xx is a failed
// delivery), no proxy is used, and unless allowPrivate it connects only to
// public addresses.
func NewClient(timeout time.Duration, allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = guard
	}
	tr := &http.Transport{
		// No Proxy: a proxy would be the address dialed, and the check
		// would not see the endpoint's.
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
