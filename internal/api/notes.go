package api

import (
	"net/http"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// addNote is POST /api/v1/accounts/{account}/notes: a case note ("called
// the user, new password set") in the account's history, with the token's
// name as its author. A company's token notes its company's accounts
// only; an address aupd holds no record of is 404, and no record is
// created for it.
func (s *server) addNote(w http.ResponseWriter, r *http.Request, p *principal) {
	addr, ok := s.target(w, r, p)
	if !ok {
		return
	}
	var req NoteRequest
	if e := decode(r, &req, false); e != nil {
		s.fail(w, r, e)
		return
	}
	text, err := store.CheckNote(req.Text)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	by := store.Actor{Name: p.name, Reason: rules.DefaultCode(p.company), Note: text, Scope: p.company, Via: store.ViaToken}
	e, err := s.store.AddNote(r.Context(), addr, by)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.log.Info("case note added", "account", addr, "actor", by.Name)
	writeJSON(w, http.StatusCreated, NoteResponse{Entry: e})
}
