// Package desk is the abuse desk: web pages under /desk/ where a
// company's abuse contact (or the provider's abuse team) sees the
// accounts suspended now, those near their threshold, lockouts and
// failed notices, reads an account's evidence and history, and acts on
// it: reinstate, suspend services, lock, unlock, end a lockout.
//
// Pages are rendered on the server with html/template from embedded
// templates and one embedded style sheet; no script is needed. Every
// response carries a Content-Security-Policy that allows no script at
// all, so that nothing taken from an event (a subject, a message text)
// can run even if it escaped the template's escaping.
//
// Three doors lead in:
//
//   - a sign-in link mailed to a company's abuse contact (or one of its
//     desk_contacts) who asked for it on the sign-in page: it works once,
//     for a few minutes, and creates a session in that person's name with
//     role abuse for that company;
//   - sign-in with an API token pasted once (the provider's staff,
//     scripts), which creates a session with the token's role and company
//     scope;
//   - the signed link of an abuse notice (Links), which shows that
//     account without a token and reinstates the suspension it is bound
//     to once; afterwards it shows the account read-only.
//
// Sessions live in Redis behind an HttpOnly, SameSite=Strict cookie
// (Secure behind TLS); sign-in attempts are limited per client address,
// and mailed links per address too. The sessions page lists a company's
// sessions and signs them all out.
//
// The rules are the API's: a token limited to a company sees that
// company's accounts only, and another company's account answers exactly
// as a missing one does (404). Every change goes through the same store
// operations as the API, so history, account events and notices are the
// same whichever door was used; the history records the door (via: desk
// or link). Every form carries a CSRF token.
package desk

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/authlimit"
	"github.com/aupd/aupd/internal/clientaddr"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Trends is what the overview's "near threshold" part needs from the
// store: the accounts whose rolling count is at least half their
// threshold (a hint list, re-read each), and their counts per hour.
type Trends interface {
	NearThreshold(ctx context.Context, limit int) ([]string, error)
	HourlyCounts(ctx context.Context, account string, window time.Duration, now time.Time) ([]int, error)
}

// Tokens is the token set the desk signs in with (auth.Tokens, or the
// API's, which a reload replaces).
type Tokens interface {
	Verify(token string) (auth.TokenConfig, bool)
	Named(name string) (auth.TokenConfig, bool)
}

// Options are what the desk needs. Config, Store, Companies, Publisher,
// Redis and Threshold are required.
type Options struct {
	Config    Config
	Store     *store.Store
	Companies *companies.Directory
	// Publisher publishes the account events of every change at once.
	Publisher store.Publisher
	// Notices gives notice delivery states, evidence and failed notices;
	// nil: not shown.
	Notices *notifier.Store
	// Trends gives the near-threshold list and hourly counts; nil: the
	// overview leaves that part out.
	Trends Trends
	Auth   auth.Config
	// Tokens, when set, are the API's own token set, which a reload
	// replaces: revoked tokens then sign in no more and their sessions end.
	// Nil: a fixed set made from Auth.
	Tokens Tokens
	Redis  Redis
	// Prefix starts the desk's Redis keys (the store's prefix).
	Prefix string
	// Threshold is an account's AUP threshold now (the company's
	// override or the provider's).
	Threshold func(account string) int
	// Window is the AUP window (default 24h); CapOf the per-account cap
	// of stored events (a count at the cap is "at least"); nil: unknown.
	Window  time.Duration
	CapOf   func(account string) int
	Logger  *slog.Logger          // nil: discard
	Metrics prometheus.Registerer // nil: no metrics
	Now     func() time.Time      // nil: time.Now
	// Clients finds a client's address for the sign-in limit
	// (http.trusted_proxies); nil: the peer's, X-Forwarded-For ignored.
	Clients *clientaddr.Resolver
	// Limit counts a forged or mangled link (a signature that does not
	// hold) as a failed authentication of its client, with the API's
	// wrong tokens, and refuses links to a client over the limit (429);
	// nil: no limit.
	Limit *authlimit.Limit
	// Mailer sends the sign-in links (the notifier); nil, or a config
	// without public_url and link_key: no sign-in by mail.
	Mailer Mailer
}

// Mailer sends aupd's own plain-text mail (notifier.Notifier.SendText).
type Mailer interface {
	SendText(ctx context.Context, to, subject, body, kind string) error
}

func (o *Options) validate() error {
	switch {
	case o.Store == nil:
		return errors.New("desk: no store")
	case o.Companies == nil:
		return errors.New("desk: no company directory")
	case o.Publisher == nil:
		return errors.New("desk: no publisher")
	case o.Redis == nil:
		return errors.New("desk: no redis client")
	case o.Threshold == nil:
		return errors.New("desk: no threshold function")
	}
	if err := o.Config.Validate(); err != nil {
		return fmt.Errorf("desk config: %w", err)
	}
	if o.Tokens == nil {
		t, err := auth.NewTokens(o.Auth)
		if err != nil {
			return fmt.Errorf("desk: %w", err)
		}
		o.Tokens = t
	}
	if o.Prefix == "" {
		o.Prefix = o.Store.Prefix()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Window == 0 {
		o.Window = 24 * time.Hour
	}
	return nil
}

// Desk is the abuse desk's handler.
type Desk struct {
	opts    Options
	cfg     Config
	st      *store.Store
	dir     *companies.Directory
	rdb     Redis
	prefix  string
	links   *Links
	log     *slog.Logger
	now     func() time.Time
	pages   map[string]*template.Template
	mux     *http.ServeMux
	tokens  Tokens // the current tokens, reloaded with the config
	signIns *prometheus.CounterVec
	actions *prometheus.CounterVec
	// mails are the sign-in links asked for, waiting for Run's senders.
	mails     chan linkRequest
	linkMails *prometheus.CounterVec
}

// New returns the desk. Mount it at /desk/ on the HTTP listener.
func New(opts Options) (*Desk, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	d := &Desk{
		opts: opts, cfg: opts.Config, st: opts.Store, dir: opts.Companies, rdb: opts.Redis, prefix: opts.Prefix,
		links: NewLinks(opts.Config), log: opts.Logger.With("component", "desk"), now: opts.Now,
		mux: http.NewServeMux(),
		signIns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_desk_sign_ins_total", Help: "Abuse desk sign-in attempts by result: ok, invalid, limited.",
		}, []string{"result"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_desk_actions_total", Help: "Abuse desk changes by action and door (desk, link) that changed an account.",
		}, []string{"action", "via"}),
		linkMails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_desk_sign_in_links_total", Help: "Sign-in links asked for on the abuse desk by result: sent, unknown (not a contact: nothing sent), limited (too many for the address), dropped (queue full or shutting down), failed (not delivered).",
		}, []string{"result"}),
		mails: make(chan linkRequest, mailQueue),
	}
	d.tokens = opts.Tokens
	for _, r := range []string{"ok", "invalid", "limited"} {
		d.signIns.WithLabelValues(r)
	}
	for _, r := range linkResults {
		d.linkMails.WithLabelValues(r)
	}
	if opts.Metrics != nil {
		for _, c := range []prometheus.Collector{d.signIns, d.actions, d.linkMails} {
			if err := opts.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("desk: register metrics: %w", err)
			}
		}
	}
	var err error
	if d.pages, err = parsePages(); err != nil {
		return nil, err
	}
	d.routes()
	return d, nil
}

// Links returns the link signer, nil when links are off.
func (d *Desk) Links() *Links { return d.links }

// Route is one desk page and what its session's token needs
// (auth.Allowed); Perm "" is open without a session (the sign-in form, the
// style sheet, and the signed links, which carry their own rights).
type Route struct {
	Pattern string
	Perm    auth.Permission
	h       http.HandlerFunc
}

// Routes returns the desk's routes and what each needs.
func Routes() []Route { return (&Desk{}).routeTable() }

func (d *Desk) routeTable() []Route {
	assets, _ := fs.Sub(assetFS, "assets")
	files := http.StripPrefix("/desk/assets/", http.FileServerFS(assets))
	return []Route{
		{"GET /desk/assets/", "", func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/") { // a directory: no listing
				d.fail(w, r, nil, http.StatusNotFound, "No such page", "There is no page at this address.")
				return
			}
			files.ServeHTTP(w, r)
		}},
		{"GET /desk/{$}", auth.PermRead, d.signedIn(auth.PermRead, d.overview)},
		{"GET /desk/sign-in", "", d.signInPage},
		{"POST /desk/sign-in", "", d.signIn},
		{"POST /desk/sign-in/link", "", d.askLink},
		{"GET /desk/sign-in/link/{token}", "", d.signInLinkPage},
		{"POST /desk/sign-in/link/{token}", "", d.signInWithLink},
		{"POST /desk/sign-out", auth.PermRead, d.signedIn(auth.PermRead, d.signOut)},
		{"GET /desk/search", auth.PermRead, d.signedIn(auth.PermRead, d.search)},
		{"GET /desk/accounts/{account}", auth.PermRead, d.signedIn(auth.PermRead, d.accountPage)},
		{"GET /desk/accounts/{account}/suspensions/{id}/evidence.txt", auth.PermRead, d.signedIn(auth.PermRead, d.evidenceFile)},
		{"POST /desk/accounts/{account}/{action}", auth.PermAct, d.signedIn(auth.PermRead, d.act)},
		{"GET /desk/l/{token}", "", d.linkPage},
		{"POST /desk/l/{token}/reinstate", "", d.linkReinstate},
		{"GET /desk/sessions", auth.PermRead, d.signedIn(auth.PermRead, d.sessionsPage)},
		// Last: it may end the session that posts it.
		{"POST /desk/sessions/sign-out", auth.PermAct, d.signedIn(auth.PermRead, d.signOutAll)},
	}
}

func (d *Desk) routes() {
	for _, rt := range d.routeTable() {
		d.mux.HandleFunc(rt.Pattern, rt.h)
	}
	d.mux.HandleFunc("/desk/", func(w http.ResponseWriter, r *http.Request) {
		d.fail(w, r, nil, http.StatusNotFound, "No such page", "There is no page at this address.")
	})
}

// ServeHTTP sets the headers every desk response carries and serves the
// page.
func (d *Desk) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	defer func() {
		if v := recover(); v != nil {
			d.log.Error("panic serving desk page", "path", logPath(r), "err", v)
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if r.Method == http.MethodPost {
		// Read the form here, so that one too large is told so, rather than
		// answered as a form without its CSRF token.
		if err := r.ParseForm(); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				d.fail(w, r, nil, http.StatusRequestEntityTooLarge, "Form too large", "The form sent is larger than the desk accepts (64 KiB). Shorten the text and try again.")
				return
			}
			d.fail(w, r, nil, http.StatusBadRequest, "Bad form", "The form could not be read. Reload the page and try again.")
			return
		}
	}
	d.mux.ServeHTTP(w, r)
}

// maxForm is the largest request body the desk reads.
const maxForm = 64 << 10

// signedIn runs h with the request's session, or sends the browser to
// the sign-in page. A session whose token may not do perm never reaches h
// (the actions, which need auth.PermAct, check it in act after the
// account's scope and the CSRF token, to answer a viewer's form with a
// page that says why).
func (d *Desk) signedIn(perm auth.Permission, h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := d.session(r)
		if err != nil {
			d.internal(w, r, nil, err)
			return
		}
		if s == nil || !auth.Allowed(s.role, s.company, perm) {
			if r.Method == http.MethodGet {
				// Back to this page after sign-in.
				to := "/desk/sign-in"
				if next := safeNext(r.URL.RequestURI()); next != "/desk/" {
					to += "?next=" + url.QueryEscape(next)
				}
				http.Redirect(w, r, to, http.StatusSeeOther)
				return
			}
			d.fail(w, r, nil, http.StatusUnauthorized, "Signed out", "Your session has ended. Sign in again.")
			return
		}
		h(w, r, s)
	}
}

func (d *Desk) internal(w http.ResponseWriter, r *http.Request, s *session, err error) {
	d.log.Error("desk request", "method", r.Method, "path", logPath(r), "err", err)
	d.fail(w, r, s, http.StatusInternalServerError, "Something went wrong", "The desk could not do that just now; try again. The aupd log has the details.")
}

// fail renders the error page.
func (d *Desk) fail(w http.ResponseWriter, r *http.Request, s *session, status int, title, msg string) {
	d.render(w, r, status, "error", &errorPage{base: d.base(s, title), Message: msg})
}

// notFound is the answer for an account that does not exist and for one
// outside the session's company: the two are the same, byte for byte.
func (d *Desk) notFound(w http.ResponseWriter, r *http.Request, s *session) {
	d.fail(w, r, s, http.StatusNotFound, "No such account", "There is no account with this address.")
}

// logPath is the request's path as logged: the secret part of a link (a
// sign-in link's or a notice's) is left out.
func logPath(r *http.Request) string {
	p := r.URL.Path
	for _, door := range []string{"/desk/sign-in/link/", "/desk/l/"} {
		if rest, ok := strings.CutPrefix(p, door); ok && rest != "" {
			tail := ""
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				tail = rest[i:]
			}
			return door + "<link>" + tail
		}
	}
	return p
}
