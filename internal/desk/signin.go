package desk

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/events"
)

type signInPage struct {
	base
	SignedOut bool
	// Mail shows the form that asks for a sign-in link by mail.
	Mail    bool
	Minutes int // how long a mailed link works
	Next    string
	Address string
}

// signInPage shows the sign-in forms. Their CSRF token is a random value
// in a SameSite=Strict cookie that the forms must repeat.
func (d *Desk) signInPage(w http.ResponseWriter, r *http.Request) {
	if s, err := d.session(r); err == nil && s != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	d.showSignIn(w, r, http.StatusOK, "", "")
}

func (d *Desk) showSignIn(w http.ResponseWriter, r *http.Request, status int, msg, addr string) {
	tok := randomToken()
	http.SetCookie(w, d.cookie(r, preCookie, tok, d.cfg.SessionTTL))
	p := &signInPage{base: d.base(nil, "Sign in"), SignedOut: r.URL.Query().Get("signed_out") == "1",
		Mail: d.mailsLinks(), Minutes: int(d.cfg.SignInLinkTTL / time.Minute), Next: safeNext(r.FormValue("next")), Address: addr}
	if p.Next == "/desk/" {
		p.Next = ""
	}
	p.CSRF, p.Error = tok, msg
	d.render(w, r, status, "signin", p)
}

// signInForm checks what both sign-in forms check first: the limit of the
// client's address, then the form's CSRF token. It answers and returns
// false when one fails.
func (d *Desk) signInForm(w http.ResponseWriter, r *http.Request) bool {
	if err := d.allowSignIn(r.Context(), r); err != nil {
		var lim *errLimited
		if errors.As(err, &lim) {
			d.signIns.WithLabelValues("limited").Inc()
			d.log.Warn("desk sign-in refused: too many attempts", "client", d.opts.Clients.Addr(r))
			w.Header().Set("Retry-After", strconv.Itoa(int(lim.retry.Seconds())+1))
			d.fail(w, r, nil, http.StatusTooManyRequests, "Too many attempts", "Too many sign-in attempts from your address. Wait a few minutes and try again.")
			return false
		}
		d.internal(w, r, nil, err)
		return false
	}
	c, err := r.Cookie(preCookie)
	if err != nil || !equal(r.PostFormValue("csrf"), c.Value) {
		d.fail(w, r, nil, http.StatusForbidden, "Form expired", "The sign-in form is out of date or was not sent from this desk. Open the sign-in page again.")
		return false
	}
	return true
}

// signIn checks the limit of the client's address first, then the form's
// CSRF token, then the token; it tells nothing about a token but that it
// is not valid.
func (d *Desk) signIn(w http.ResponseWriter, r *http.Request) {
	if !d.signInForm(w, r) {
		return
	}
	client := d.opts.Clients.Addr(r)
	// A token that may not read (a publisher's) gets the answer of a
	// wrong token: the desk only shows, and a publisher's token must open
	// nothing here.
	t, ok := d.tokens.Verify(strings.TrimSpace(r.PostFormValue("token")))
	if ok && !t.Allowed(auth.PermRead) {
		d.log.Info("desk sign-in refused: the token may not read", "token", t.Name, "role", t.Role, "client", client)
		ok = false
	}
	if !ok {
		d.signIns.WithLabelValues("invalid").Inc()
		d.log.Info("desk sign-in with an invalid token", "client", client)
		d.showSignIn(w, r, http.StatusUnauthorized, "That token is not valid.", "")
		return
	}
	s, err := d.newSession(r.Context(), grant{kind: kindToken, name: t.Name, role: t.Role, company: t.Company, binding: t.Fingerprint()}, client, d.now())
	if err != nil {
		d.internal(w, r, nil, err)
		return
	}
	d.signIns.WithLabelValues("ok").Inc()
	d.log.Info("desk sign-in", "token", t.Name, "role", t.Role, "company", t.Company, "client", client)
	d.startSession(w, r, s, r.PostFormValue("next"))
}

// startSession sets the session's cookie and sends the browser on to
// next, a desk page (safeNext).
func (d *Desk) startSession(w http.ResponseWriter, r *http.Request, s *session, next string) {
	http.SetCookie(w, d.cookie(r, preCookie, "", 0))
	http.SetCookie(w, d.cookie(r, sessionCookie, s.id, d.cfg.SessionTTL))
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

type linkSentPage struct {
	base
	Minutes int
}

// askLink takes an address from the sign-in page and answers that a link
// is on its way if the address may sign in, whatever the address: the
// senders (Run) look it up and mail the link later, so that neither the
// answer nor its timing tells anything about the address.
func (d *Desk) askLink(w http.ResponseWriter, r *http.Request) {
	if !d.mailsLinks() {
		d.fail(w, r, nil, http.StatusNotFound, "No such page", "This desk does not mail sign-in links. Sign in with an API token.")
		return
	}
	if !d.signInForm(w, r) {
		return
	}
	raw := strings.TrimSpace(r.PostFormValue("address"))
	addr, err := events.NormalizeAccount(raw)
	if err != nil {
		d.showSignIn(w, r, http.StatusBadRequest, "That is not an email address.", raw)
		return
	}
	d.enqueue(linkRequest{addr: addr, client: d.opts.Clients.Addr(r), next: safeNext(r.PostFormValue("next")), at: d.now()})
	d.render(w, r, http.StatusOK, "signin_sent", &linkSentPage{base: d.base(nil, "Check your mail"), Minutes: int(d.cfg.SignInLinkTTL / time.Minute)})
}

type signInLinkPage struct {
	base
	Link    *SignInLink
	Company string // its name
	Path    string
}

func (d *Desk) signInUsedKey(lk *SignInLink) string {
	return d.prefix + ":desk:signin-used:" + lk.nonce
}

// signInLink checks the sign-in link of the path and answers for a bad,
// expired or used one, or one whose address may no longer sign in for its
// company.
func (d *Desk) signInLink(w http.ResponseWriter, r *http.Request) (*SignInLink, string, bool) {
	again := " Ask for a new link on the sign-in page."
	if d.linkLimited(w, r) {
		return nil, "", false
	}
	lk, err := d.links.ParseSignIn(r.PathValue("token"), d.now())
	d.linkFailed(r, err)
	switch {
	case errors.Is(err, ErrLinkExpired):
		d.fail(w, r, nil, http.StatusGone, "Link expired", "This sign-in link expired at "+lk.Expires.Format("2006-01-02 15:04 UTC")+"."+again)
		return nil, "", false
	case err != nil:
		d.fail(w, r, nil, http.StatusNotFound, "Not a valid link", "This sign-in link is not valid. Use the link exactly as it is in the mail."+again)
		return nil, "", false
	}
	c, ok := d.dir.ByID(lk.Company)
	if !ok || !c.MaySignIn(lk.Address) {
		d.fail(w, r, nil, http.StatusGone, "Link no longer valid", "This address may no longer sign in for this company.")
		return nil, "", false
	}
	n, err := d.rdb.Get(r.Context(), d.signInUsedKey(lk)).Result()
	if err == nil && n != "" {
		d.fail(w, r, nil, http.StatusGone, "Link used", "This sign-in link has been used; it works once."+again)
		return nil, "", false
	}
	// "Sign out everywhere" voids the links mailed before it too.
	void, err := d.revoked(r.Context(), lk.Issued, "all", "company:"+lk.Company)
	if err != nil {
		d.internal(w, r, nil, err)
		return nil, "", false
	}
	if void {
		d.fail(w, r, nil, http.StatusGone, "Link no longer valid", "Everyone was signed out of the desk for this company after this link was sent."+again)
		return nil, "", false
	}
	name := c.Name
	if name == "" {
		name = c.ID
	}
	return lk, name, true
}

// signInLinkPage shows the link's "Sign in" button. Opening the link
// does not use it up: mail filters that open links to scan them must not
// sign in, nor spend the link.
func (d *Desk) signInLinkPage(w http.ResponseWriter, r *http.Request) {
	lk, company, ok := d.signInLink(w, r)
	if !ok {
		return
	}
	p := &signInLinkPage{base: d.base(nil, "Sign in"), Link: lk, Company: company, Path: "/desk/sign-in/link/" + lk.token}
	p.CSRF = d.links.signInForm(lk.token)
	d.render(w, r, http.StatusOK, "signin_link", p)
}

// signInWithLink uses the link once and signs its person in: role abuse,
// limited to the link's company, in the person's name.
func (d *Desk) signInWithLink(w http.ResponseWriter, r *http.Request) {
	lk, _, ok := d.signInLink(w, r)
	if !ok {
		return
	}
	if !equal(r.PostFormValue("csrf"), d.links.signInForm(lk.token)) {
		d.fail(w, r, nil, http.StatusForbidden, "Form expired", errNoCSRF.Error()+". Open the link from the mail again.")
		return
	}
	ctx := r.Context()
	now := d.now()
	first, err := d.rdb.SetNX(ctx, d.signInUsedKey(lk), now.UnixMilli(), lk.Expires.Sub(now)+time.Hour).Result()
	if err != nil {
		d.internal(w, r, nil, err)
		return
	}
	if !first {
		d.fail(w, r, nil, http.StatusGone, "Link used", "This sign-in link has been used; it works once. Ask for a new link on the sign-in page.")
		return
	}
	client := d.opts.Clients.Addr(r)
	s, err := d.newSession(ctx, grant{kind: kindPerson, name: lk.Address, role: personRole, company: lk.Company, binding: d.links.fingerprint()}, client, now)
	if err != nil {
		d.rdb.Del(context.WithoutCancel(ctx), d.signInUsedKey(lk)) // not used after all
		d.internal(w, r, nil, err)
		return
	}
	d.signIns.WithLabelValues("ok").Inc()
	d.log.Info("desk sign-in with a mailed link", "person", lk.Address, "role", personRole, "company", lk.Company, "client", client)
	d.startSession(w, r, s, lk.Next)
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
