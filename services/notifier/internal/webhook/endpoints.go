package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/blobref/blobref/pkg/events"
)

// Endpoint is where one owner's completed uploads are delivered.
type Endpoint struct {
	// ID names the endpoint in markers, webhook-ids and logs: 1 to 128 of
	// [A-Za-z0-9_-]. Renaming an endpoint makes it a new one, which gets
	// the uploads completed after the change.
	ID string
	// Owner is whose uploads it receives: the events' owner (ingest's
	// authenticated caller).
	Owner string
	// URL is an http or https URL.
	URL string
	// Secrets sign each request; the first is the current one, the others
	// (during a rotation) sign beside it.
	Secrets []Secret
}

// Endpoints are the configured endpoints, by owner.
type Endpoints struct {
	byOwner map[string][]Endpoint
	n       int
}

// For returns the endpoints of owner, in the order configured.
func (e *Endpoints) For(owner string) []Endpoint { return e.byOwner[owner] }

// Len is the number of endpoints.
func (e *Endpoints) Len() int { return e.n }

// file is the endpoints file: JSON, {"endpoints": [...]}.
type file struct {
	Endpoints []struct {
		ID         string `json:"id"`
		Owner      string `json:"owner"`
		URL        string `json:"url"`
		SecretFile string `json:"secret_file"`
	} `json:"endpoints"`
}

// LoadEndpoints reads the endpoints file at path (NOTIFIER_ENDPOINTS_FILE)
// and each endpoint's secret file (one "whsec_" secret a line, the current
// one first, "#" comments; a relative path is relative to the endpoints
// file). Unless allowPrivate, an endpoint whose host is an IP address must
// be a public one; names are checked at each connection. It names every bad
// endpoint.
func LoadEndpoints(path string, allowPrivate bool) (*Endpoints, error) {
	raw, err := os.ReadFile(path) // #nosec G304 -- NOTIFIER_ENDPOINTS_FILE, the operator's setting
	if err != nil {
		return nil, fmt.Errorf("endpoints: %w", err)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("endpoints: %s: %w", path, err)
	}
	eps := &Endpoints{byOwner: map[string][]Endpoint{}}
	seen := map[string]bool{}
	var errs []error
	for i, fe := range f.Endpoints {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("endpoints: %s: endpoint %d (%q): "+format, append([]any{path, i, fe.ID}, args...)...))
		}
		switch {
		case !events.ValidID(fe.ID):
			bad("id: not 1 to 128 characters of [A-Za-z0-9_-]")
			continue
		case seen[fe.ID]:
			bad("id: given twice")
			continue
		case fe.Owner == "":
			bad("owner: missing")
			continue
		}
		seen[fe.ID] = true
		if err := checkURL(fe.URL, allowPrivate); err != nil {
			bad("url: %v", err)
			continue
		}
		secretPath := fe.SecretFile
		if secretPath == "" {
			bad("secret_file: missing")
			continue
		}
		if !filepath.IsAbs(secretPath) {
			secretPath = filepath.Join(filepath.Dir(path), secretPath)
		}
		secrets, err := readSecrets(secretPath)
		if err != nil {
			bad("secret_file: %v", err)
			continue
		}
		eps.byOwner[fe.Owner] = append(eps.byOwner[fe.Owner], Endpoint{ID: fe.ID, Owner: fe.Owner, URL: fe.URL, Secrets: secrets})
		eps.n++
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return eps, nil
}

// checkURL checks an endpoint URL: absolute http or https, a host, no
// credentials (they would show in logs), and a public IP address when the
// host is one (unless allowPrivate).
func checkURL(raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("scheme %q is not http or https", u.Scheme)
	case u.Hostname() == "":
		return errors.New("no host")
	case u.User != nil:
		return errors.New("credentials in the URL: the signature authenticates the notifier")
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil && !allowPrivate && !Public(a) {
		return fmt.Errorf("%s is not a public address (NOTIFIER_ALLOW_PRIVATE allows it)", a)
	}
	return nil
}

// readSecrets reads a secret file: one "whsec_" secret a line, blank lines
// and lines starting with "#" ignored, at least one.
func readSecrets(path string) ([]Secret, error) {
	raw, err := os.ReadFile(path) // #nosec G304 -- a secret_file of the operator's endpoints file
	if err != nil {
		return nil, err
	}
	var secrets []Secret
	for n, line := range strings.Split(string(raw), "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		s, err := ParseSecret(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		secrets = append(secrets, s)
	}
	if len(secrets) == 0 {
		return nil, errors.New("no secret")
	}
	return secrets, nil
}
