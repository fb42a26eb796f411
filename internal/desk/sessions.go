package desk

import (
	"net/http"
	"strconv"
	"time"

	"github.com/aupd/aupd/internal/auth"
)

// maxListed bounds the sessions the page lists per company.
const maxListed = 200

type sessionRow struct {
	Who     string
	Person  bool // signed in with a mailed link; else with a token
	Role    string
	Client  string
	Created time.Time
	Expires time.Time
	Current bool
}

type sessionGroup struct {
	Company string // id, "" for the provider's
	Name    string
	Rows    []sessionRow
	Full    bool // the list was cut at maxListed
}

type scopeOption struct{ Value, Label string }

type sessionsPage struct {
	base
	Groups []sessionGroup
	// Scopes are the choices of an unscoped session's "sign out
	// everywhere"; a company's session signs out its company.
	Scopes []scopeOption
}

// sessionsPage lists the sessions in the session's scope: its company's,
// or, without a company, the provider's and every company's.
func (d *Desk) sessionsPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	p := &sessionsPage{base: d.base(s, "Sessions")}
	companies := []string{s.company}
	if s.company == "" {
		companies = d.indexes()
		p.Scopes = append(p.Scopes, scopeOption{"*", "Everyone (every session, yours too)"}, scopeOption{"-", "The provider's staff (sessions without a company)"})
	}
	for _, id := range companies {
		list, hashes, err := d.sessionsOf(ctx, id, maxListed)
		if err != nil {
			d.internal(w, r, s, err)
			return
		}
		g := sessionGroup{Company: id, Name: "The provider's staff (no company)", Full: len(list) == maxListed}
		if c, ok := d.dir.ByID(id); ok {
			g.Name = c.Name
			if g.Name == "" {
				g.Name = c.ID
			}
			if s.company == "" {
				p.Scopes = append(p.Scopes, scopeOption{c.ID, g.Name + " (" + c.ID + ")"})
			}
		}
		for i, x := range list {
			g.Rows = append(g.Rows, sessionRow{Who: x.name, Person: x.kind == kindPerson, Role: string(x.role), Client: x.client,
				Created: x.created, Expires: x.expires, Current: hashes[i] == sessionHash(s.id)})
		}
		if len(g.Rows) > 0 || id == s.company {
			p.Groups = append(p.Groups, g)
		}
	}
	if n := r.URL.Query().Get("ended"); n != "" {
		if v, err := strconv.Atoi(n); err == nil && v >= 0 {
			p.Flash = "Signed out everywhere: " + strconv.Itoa(v) + " sessions ended."
		}
	}
	d.render(w, r, http.StatusOK, "sessions", p)
}

// signOutAll ends every session of a company: the session's own company,
// or, for a session without one, the company chosen, the provider's staff
// ("-") or everyone ("*"). It needs the right to act (role abuse or
// admin) in that scope.
func (d *Desk) signOutAll(w http.ResponseWriter, r *http.Request, s *session) {
	if !equal(r.PostFormValue("csrf"), s.csrf) {
		d.fail(w, r, s, http.StatusForbidden, "Form expired", errNoCSRF.Error()+". Reload the page and try again.")
		return
	}
	if !auth.Allowed(s.role, s.company, auth.PermAct) {
		d.fail(w, r, s, http.StatusForbidden, "Not allowed", "Your session has role "+string(s.role)+"; signing others out needs role abuse or admin.")
		return
	}
	scope := orDash(s.company)
	if s.company == "" {
		scope = r.PostFormValue("scope")
		if _, ok := d.dir.ByID(scope); !ok && scope != "*" && scope != "-" {
			d.fail(w, r, s, http.StatusBadRequest, "Choose whose sessions", "Choose a company, the provider's staff or everyone.")
			return
		}
	}
	n, err := d.signOutEverywhere(r.Context(), scope)
	if err != nil {
		d.internal(w, r, s, err)
		return
	}
	d.log.Info("desk: signed out everywhere", "by", s.name, "scope", scope, "sessions", n, "client", d.opts.Clients.Addr(r))
	if scope == "*" || scope == orDash(s.company) {
		http.SetCookie(w, d.cookie(r, sessionCookie, "", 0))
		http.Redirect(w, r, "/desk/sign-in?signed_out=1", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/desk/sessions?ended="+strconv.Itoa(n), http.StatusSeeOther)
}
