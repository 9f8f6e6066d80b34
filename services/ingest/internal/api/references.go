package api

import (
	"net/http"

	"github.com/blobref/blobref/services/ingest/internal/auth"
)

// getReference is GET /v1/references?subject=S: the caller's current
// reference of S.
func (a *API) getReference(w http.ResponseWriter, r *http.Request) {
	caller, err := a.authenticate(r, auth.ScopeRead)
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	subject, err := subjectOf(r, caller)
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	ref, err := a.opts.Uploads.CurrentReference(r.Context(), caller.Name, subject)
	if err != nil {
		a.writeProblem(w, r, err)
		return
	}
	infoOf(r).id = ref.ID
	writeJSON(w, http.StatusOK, ref)
}

// subjectOf reads the subject query parameter of r, checks it against the
// event contract (400) and the caller's subject prefixes (403).
func subjectOf(r *http.Request, caller auth.Caller) (string, error) {
	subject, err := checkSubject(r.URL.Query()["subject"])
	if err != nil {
		return "", err
	}
	if err := caller.CheckSubject(subject); err != nil {
		return "", err
	}
	return subject, nil
}
