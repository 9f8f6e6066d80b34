package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/blobref/blobref/services/ingest/internal/auth"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// listStates are the states GET /v1/uploads filters on.
var listStates = []string{uploads.StatePending, uploads.StateStored, uploads.StateCompleted, uploads.StateFailed}

// listUploads is GET /v1/uploads?subject=&state=&limit=&cursor=: the
// caller's uploads, newest first, a page at a time.
func (a *API) listUploads(w http.ResponseWriter, r *http.Request) {
	caller, err := a.authenticate(r, auth.ScopeRead)
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	q, err := parseListQuery(r.URL.Query())
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	q.Caller = caller.Name
	page, err := a.opts.Uploads.List(r.Context(), q)
	if errors.Is(err, uploads.ErrBadCursor) {
		err = invalid("cursor", "not a cursor this listing handed out: pass the next of the previous page, unchanged")
	}
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	if page.Next != "" {
		next := url.Values{"cursor": {page.Next}}
		for _, name := range []string{"subject", "state", "limit"} {
			if v := r.URL.Query().Get(name); v != "" {
				next.Set(name, v)
			}
		}
		w.Header().Set("Link", "<"+UploadsPath+"?"+next.Encode()+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, page)
}

// parseListQuery reads the listing's query parameters, naming every bad
// one. Each may be given once; all are optional.
func parseListQuery(values url.Values) (uploads.ListQuery, error) {
	var q uploads.ListQuery
	var errs []error
	one := func(name string) (string, bool) {
		vs := values[name]
		switch len(vs) {
		case 0:
			return "", false
		case 1:
			return vs[0], true
		}
		errs = append(errs, invalid(name, "given more than once"))
		return "", false
	}
	if _, ok := values["subject"]; ok {
		subject, err := checkSubject(values["subject"])
		errs = append(errs, err)
		q.Subject = subject
	}
	if state, ok := one("state"); ok {
		if !slices.Contains(listStates, state) {
			errs = append(errs, invalid("state", "one of "+strings.Join(listStates, ", ")))
		}
		q.State = state
	}
	if limit, ok := one("limit"); ok {
		n, err := strconv.Atoi(limit)
		if err != nil || n < 1 || n > uploads.MaxListLimit {
			errs = append(errs, invalid("limit", fmt.Sprintf("an integer from 1 to %d (default %d)", uploads.MaxListLimit, uploads.DefaultListLimit)))
		}
		q.Limit = n
	}
	if cursor, ok := one("cursor"); ok {
		if cursor == "" {
			errs = append(errs, invalid("cursor", "empty: leave it out for the first page"))
		}
		q.Cursor = cursor
	}
	if err := joinParams(errs...); err != nil {
		return uploads.ListQuery{}, err
	}
	return q, nil
}
