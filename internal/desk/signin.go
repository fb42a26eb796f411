package desk

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/aupd/aupd/internal/api"
)

type signInPage struct {
	base
	SignedOut bool
}

// signInPage shows the token form. Its CSRF token is a random value in a
// SameSite=Strict cookie that the form must repeat.
func (d *Desk) signInPage(w http.ResponseWriter, r *http.Request) {
	if s, err := d.session(r); err == nil && s != nil {
		http.Redirect(w, r, "/desk/", http.StatusSeeOther)
		return
	}
	d.showSignIn(w, r, http.StatusOK, "")
}

func (d *Desk) showSignIn(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	http.SetCookie(w, d.cookie(r, preCookie, tok, d.cfg.SessionTTL))
	p := &signInPage{base: d.base(nil, "Sign in"), SignedOut: r.URL.Query().Get("signed_out") == "1"}
	p.CSRF, p.Error = tok, msg
	d.render(w, r, status, "signin", p)
}

// signIn checks the limit of the client's address first, then the form's
// CSRF token, then the token; it tells nothing about a token but that it
// is not valid.
func (d *Desk) signIn(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := d.allowSignIn(ctx, r); err != nil {
		var lim *errLimited
		if errors.As(err, &lim) {
			d.signIns.WithLabelValues("limited").Inc()
			d.log.Warn("desk sign-in refused: too many attempts", "remote", r.RemoteAddr)
			w.Header().Set("Retry-After", strconv.Itoa(int(lim.retry.Seconds())+1))
			d.fail(w, r, nil, http.StatusTooManyRequests, "Too many attempts", "Too many sign-in attempts from your address. Wait a few minutes and try again.")
			return
		}
		d.internal(w, r, nil, err)
		return
	}
	c, err := r.Cookie(preCookie)
	if err != nil || !equal(r.PostFormValue("csrf"), c.Value) {
		d.fail(w, r, nil, http.StatusForbidden, "Form expired", "The sign-in form is out of date or was not sent from this desk. Open the sign-in page again.")
		return
	}
	// A token that may not read (a publisher's) gets the answer of a
	// wrong token: the desk only shows, and a publisher's token must open
	// nothing here.
	t, ok := d.tokens.Verify(strings.TrimSpace(r.PostFormValue("token")))
	if ok && !t.Allowed(api.PermRead) {
		d.log.Info("desk sign-in refused: the token may not read", "token", t.Name, "role", t.Role, "remote", r.RemoteAddr)
		ok = false
	}
	if !ok {
		d.signIns.WithLabelValues("invalid").Inc()
		d.log.Info("desk sign-in with an invalid token", "remote", r.RemoteAddr)
		d.showSignIn(w, r, http.StatusUnauthorized, "That token is not valid.")
		return
	}
	s, err := d.newSession(ctx, t, d.now())
	if err != nil {
		d.internal(w, r, nil, err)
		return
	}
	d.signIns.WithLabelValues("ok").Inc()
	d.log.Info("desk sign-in", "token", t.Name, "role", t.Role, "company", t.Company)
	http.SetCookie(w, d.cookie(r, preCookie, "", 0))
	http.SetCookie(w, d.cookie(r, sessionCookie, s.id, d.cfg.SessionTTL))
	http.Redirect(w, r, "/desk/", http.StatusSeeOther)
}

func (d *Desk) signOut(w http.ResponseWriter, r *http.Request, s *session) {
	if !equal(r.PostFormValue("csrf"), s.csrf) {
		d.fail(w, r, s, http.StatusForbidden, "Form expired", errNoCSRF.Error()+". Reload the page and try again.")
		return
	}
	if err := d.endSession(r.Context(), s); err != nil {
		d.internal(w, r, s, err)
		return
	}
	http.SetCookie(w, d.cookie(r, sessionCookie, "", 0))
	http.Redirect(w, r, "/desk/sign-in?signed_out=1", http.StatusSeeOther)
}
