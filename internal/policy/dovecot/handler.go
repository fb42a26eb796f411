// Package dovecot is aupd's Dovecot 2.3 authentication policy server
// (doc.dovecot.org, "Authentication policy support"): an http.Handler that
// Dovecot's auth process asks before and after each login
// (?command=allow) and tells the outcome (?command=report).
//
// An allow request is answered with rules.Decide for the login's protocol:
// {"status":0} allows, {"status":-1,"msg":"..."} refuses and Dovecot shows
// the message to the user (IMAP "NO [ALERT] msg", POP3 "-ERR [AUTH] msg").
// A lockout is refused with {"status":-1} and no message, which Dovecot
// shows exactly as it shows a wrong password ("Authentication failed."), so
// that an intruder gets no hint of it. A report of a failed login that the
// policy did not refuse is counted toward the lockout; a successful one
// resets the count.
package dovecot

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/secret"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/authlimit"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/policy/lockout"
	"github.com/aupd/aupd/internal/ratelog"
	"github.com/aupd/aupd/rules"
)

// Accounts looks up an account's state; see postfix.Accounts, which has the
// same method, so one store implements both.
type Accounts interface {
	// Lookup returns the state of account (normalized). governed reports
	// whether aupd governs the address: its domain belongs to a company of
	// this provider, or aupd holds a record of it.
	Lookup(ctx context.Context, account string) (view rules.AccountView, governed bool, err error)
}

// Failures counts failed logins; *lockout.Counter implements it.
type Failures interface {
	Failure(ctx context.Context, account, pwhash, detail string) (lockout.Outcome, error)
	Success(ctx context.Context, account string) error
}

// Logins keeps a short record of the recent logins of the accounts aupd
// governs, for the abuse desk; app's adapter over store.RecordLogin
// implements it.
type Logins interface {
	// RecordLogin records one login and reports whether it did. A login
	// whose password was verified (LoginOK, LoginRefused) of an account
	// aupd governs may start an account's record; a failed one is only
	// added to an account that has a record already, so that guesses at
	// names that are not mailboxes fill nothing.
	RecordLogin(ctx context.Context, account string, l Login) (bool, error)
}

// Login is one authentication Dovecot reported.
type Login struct {
	Time     time.Time
	Result   string // LoginOK, LoginFailed or LoginRefused
	Protocol string // Dovecot's service: imap, pop3, submission, ...
	Remote   string // the client's address
}

// The results of a Login (store.LoginOK and the others).
const (
	LoginOK      = "ok"
	LoginFailed  = "failed"
	LoginRefused = "refused"
)

// Secret is a configuration value that never prints.
type Secret = secret.Secret

// Config configures the Dovecot auth policy handler.
type Config struct {
	// Listen is where the app serves this handler, on a listener of its
	// own. Dovecot's auth_policy_server_url points here.
	Listen string `yaml:"listen"`
	// APIKey, when set, must be sent by Dovecot in the APIHeader header
	// (auth_policy_server_api_header = X-API-Key:KEY). Compared in
	// constant time.
	APIKey Secret `yaml:"api_key"`
	// PreviousAPIKey, when set, is accepted besides APIKey while the
	// Dovecot servers are switched to a new key (docs/dovecot.md): each
	// request that sends it is counted and logged (at most every 10s), so
	// that the operator sees when to remove it.
	PreviousAPIKey Secret `yaml:"previous_api_key"`
	// APIHeader is the header that carries APIKey. Default X-API-Key, the
	// header Dovecot uses when auth_policy_server_api_header has no name.
	APIHeader string `yaml:"api_header"`
	// LookupTimeout bounds the work of one request.
	LookupTimeout time.Duration `yaml:"lookup_timeout"`
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// RecentLogins is how many entries of a governed account's recent
	// logins (one per result, protocol and client address) are kept for
	// the abuse desk, from the reports; 0 keeps none.
	RecentLogins int `yaml:"recent_logins"`
	// RecentLoginsRetention is how long an entry stays after its last
	// login.
	RecentLoginsRetention time.Duration `yaml:"recent_logins_retention"`
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		Listen:                "127.0.0.1:10041",
		APIHeader:             "X-API-Key",
		LookupTimeout:         2 * time.Second,
		MaxBodyBytes:          64 << 10,
		RecentLogins:          20,
		RecentLoginsRetention: 7 * 24 * time.Hour,
	}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.APIHeader == "" {
		c.APIHeader = d.APIHeader
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = d.LookupTimeout
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.RecentLoginsRetention == 0 {
		c.RecentLoginsRetention = d.RecentLoginsRetention
	}
	return c
}

// RecentLoginLimits are the recent logins' bounds, defaults applied:
// entries kept (0: none) and how long one stays.
func (c Config) RecentLoginLimits() (int, time.Duration) {
	c = c.withDefaults()
	return c.RecentLogins, c.RecentLoginsRetention
}

// Validate reports the first invalid setting, after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.LookupTimeout < 0:
		return fmt.Errorf("dovecot policy: lookup_timeout must be positive, got %s", c.LookupTimeout)
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("dovecot policy: max_body_bytes must be at least 1024, got %d", c.MaxBodyBytes)
	case strings.ContainsAny(c.APIHeader, " :\r\n"):
		return fmt.Errorf("dovecot policy: api_header %q is not a header name", c.APIHeader)
	case strings.ContainsAny(string(c.APIKey), "\r\n"):
		return errors.New("dovecot policy: api_key must be one line")
	case strings.ContainsAny(string(c.PreviousAPIKey), "\r\n"):
		return errors.New("dovecot policy: previous_api_key must be one line")
	case c.PreviousAPIKey != "" && c.APIKey == "":
		return errors.New("dovecot policy: previous_api_key is set but api_key is not: it is accepted only besides a current key")
	case c.PreviousAPIKey != "" && c.PreviousAPIKey == c.APIKey:
		return errors.New("dovecot policy: previous_api_key is the same as api_key")
	case c.RecentLogins < 0 || c.RecentLogins > 100:
		return fmt.Errorf("dovecot policy: recent_logins must be 0 to 100, got %d", c.RecentLogins)
	case c.RecentLoginsRetention < time.Hour:
		return fmt.Errorf("dovecot policy: recent_logins_retention must be at least 1h, got %s", c.RecentLoginsRetention)
	case c.APIKey == "" && !loopbackListen(c.Listen):
		return fmt.Errorf("dovecot policy: api_key is required when listen (%s) is not a loopback address", c.Listen)
	}
	return nil
}

// loopbackListen reports whether addr (host:port) listens on loopback
// only: 127.0.0.0/8, ::1 or localhost. An empty host listens everywhere.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Options are a Handler's optional collaborators.
type Options struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	Now        func() time.Time      // nil: time.Now
	// Logins records the logins of the reports; nil: none are.
	Logins Logins
	// Limit limits wrong API keys per client address, counted with the
	// other doors' failures (authlimit); nil: no limit.
	Limit *authlimit.Limit
}

// Handler serves Dovecot's auth policy requests. It is safe for concurrent
// use.
type Handler struct {
	cfg      Config
	accounts Accounts
	failures Failures
	logins   Logins
	limit    *authlimit.Limit
	log      *slog.Logger
	warn     *ratelog.Limiter
	now      func() time.Time
	metrics  *metrics
}

// The result label values of aupd_policy_requests_total{server="dovecot"}.
const (
	ResultAllow         = "allow"
	ResultDeny          = "deny"
	ResultLockout       = "lockout" // refused as a plain authentication failure
	ResultReportSuccess = "report_success"
	ResultReportFailure = "report_failure"
	ResultReportIgnored = "report_ignored"
	ResultLockedOut     = "locked_out" // this report locked the account out
	ResultError         = "error"
	ResultUnauthorized  = "unauthorized"
	ResultLimited       = "limited" // too many wrong API keys from the client
	ResultBadRequest    = "bad_request"
)

// New returns a handler. failures may be nil, and then reports are
// accepted and ignored.
func New(cfg Config, accounts Accounts, failures Failures, opts Options) (*Handler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if accounts == nil {
		return nil, errors.New("dovecot policy: nil Accounts")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("dovecot policy: %w", err)
	}
	log = log.With("component", "policy.dovecot")
	return &Handler{cfg: cfg, accounts: accounts, failures: failures, logins: opts.Logins, limit: opts.Limit,
		log: log, warn: ratelog.New(log, 10*time.Second), now: now, metrics: m}, nil
}

// Request is the JSON body Dovecot sends, built from
// auth_policy_request_attributes (docs/dovecot.md gives the template).
// Unknown attributes are ignored.
type Request struct {
	Login    string `json:"login"`    // %{requested_username}
	User     string `json:"user"`     // %{user}: the name after auth_username_format
	PWHash   string `json:"pwhash"`   // %{hashed_password}
	Remote   string `json:"remote"`   // %{rip}
	Protocol string `json:"protocol"` // %s: imap, pop3, smtp, submission, ...
	Session  string `json:"session_id"`
	// Success and PolicyReject are added by Dovecot to reports.
	Success      *bool `json:"success"`
	PolicyReject *bool `json:"policy_reject"`
}

// Response is the JSON answer. A negative Status refuses the login; Msg,
// when set, is shown to the user.
type Response struct {
	Status int    `json:"status"`
	Msg    string `json:"msg,omitempty"`
}

// Messages shown to users for refusals that may be told (everything but a
// lockout), by rules code.
var messages = map[string]string{
	rules.CodeLocked:           "Account is locked. Contact your administrator.",
	rules.CodeMaintenance:      "Mailbox is under maintenance. Try again later.",
	rules.CodeClosed:           "Account is closed.",
	rules.CodeForward:          "This address has no mailbox.",
	rules.CodeIMAPSuspended:    "IMAP access is suspended for this account.",
	rules.CodePOP3Suspended:    "POP3 access is suspended for this account.",
	rules.CodeWebmailSuspended: "Webmail access is suspended for this account.",
}

// AccessFor maps Dovecot's protocol (the service name, %s) to the access
// rules decide. Protocols aupd has no service for (managesieve, doveadm,
// ...) are checked as SMTP AUTH is: by the account's status only.
func AccessFor(protocol string) rules.Access {
	switch strings.ToLower(protocol) {
	case "imap":
		return rules.LoginIMAP
	case "pop3":
		return rules.LoginPOP3
	case "webmail":
		return rules.LoginWebmail
	}
	return rules.LoginSMTP
}

// ServeHTTP answers POST /?command=allow and POST /?command=report on any
// path, so that the handler can be mounted anywhere.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	result := h.serve(w, r)
	h.metrics.requests.WithLabelValues(serverName, result).Inc()
	h.metrics.latency.WithLabelValues(serverName).Observe(time.Since(start).Seconds())
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) string {
	if h.cfg.APIKey != "" {
		// A client over the limit learns nothing of its guess, right or
		// wrong. A Dovecot that holds the key never sends a wrong one: a
		// guesser is held back, and a Dovecot whose key differs (changed
		// on one side only: docs/dovecot.md) until the window has passed.
		if h.limit != nil {
			if retry, blocked := h.limit.Blocked(r.Context(), r); blocked {
				w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds()+0.999)))
				httpError(w, http.StatusTooManyRequests, "too many wrong API keys from this address; try again later")
				return ResultLimited
			}
		}
		got := []byte(strings.TrimSpace(r.Header.Get(h.cfg.APIHeader)))
		current := subtle.ConstantTimeCompare(got, []byte(h.cfg.APIKey))
		previous := 0
		if h.cfg.PreviousAPIKey != "" {
			previous = subtle.ConstantTimeCompare(got, []byte(h.cfg.PreviousAPIKey))
		}
		if current|previous != 1 {
			if h.limit != nil {
				h.limit.Fail(r.Context(), r)
			}
			httpError(w, http.StatusUnauthorized, "missing or wrong API key")
			return ResultUnauthorized
		}
		if previous == 1 {
			h.metrics.previousKey.WithLabelValues(serverName).Inc()
			h.warn.Warn("a Dovecot sent policy.dovecot.previous_api_key: remove it once no Dovecot does (docs/dovecot.md, \"Changing the API key\")",
				"client", r.RemoteAddr)
		}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpError(w, http.StatusMethodNotAllowed, "POST only")
		return ResultBadRequest
	}
	command := r.URL.Query().Get("command")
	if command != "allow" && command != "report" {
		httpError(w, http.StatusBadRequest, "command must be allow or report")
		return ResultBadRequest
	}
	req, err := decodeRequest(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return ResultBadRequest
	}
	h.log.Debug("policy request", "command", command, "login", req.Login, "user", req.User,
		"protocol", req.Protocol, "remote", req.Remote, "session", req.Session,
		"success", optBool(req.Success), "policy_reject", optBool(req.PolicyReject))
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.LookupTimeout)
	defer cancel()
	var resp Response
	var result string
	if command == "allow" {
		resp, result, err = h.Allow(ctx, req)
	} else {
		resp, result, err = h.Report(ctx, req)
	}
	if err != nil {
		// Dovecot applies auth_policy_reject_on_fail to an HTTP error.
		h.log.Error("policy request", "command", command, "protocol", req.Protocol, "err", err)
		httpError(w, http.StatusServiceUnavailable, "policy lookup failed")
		return ResultError
	}
	writeJSON(w, http.StatusOK, resp)
	return result
}

// decodeRequest decodes one JSON request object.
func decodeRequest(body io.Reader) (Request, error) {
	var req Request
	dec := json.NewDecoder(body)
	if err := dec.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("request is not a JSON object of string attributes: %w", err)
	}
	if dec.More() {
		return Request{}, errors.New("request has data after the JSON object")
	}
	return req, nil
}

// account returns the account a request is about: the user name after
// Dovecot's translation when it is an address, else the name the user
// typed. ok is false when neither is an address.
func (req Request) account() (string, bool) {
	for _, s := range []string{req.User, req.Login} {
		if a, err := events.NormalizeAccount(strings.TrimSpace(s)); err == nil {
			return a, true
		}
	}
	return "", false
}

// Allow answers command=allow.
//
// Nothing about an account's state may be told before its password is
// verified, and Dovecot sends the check before authentication
// (auth_policy_check_before_auth) and the one after it
// (auth_policy_check_after_auth) with the same attributes, so aupd cannot
// tell them apart. It is therefore run with check_before_auth = no
// (deploy/dovecot/conf.d/95-aupd.conf): every allow request it gets comes
// after a verified password, and its answer (a reason for a refusal, none
// for a lockout) is shown only to a user who knew the password. A wrong
// password fails alike for every account, existing or not.
func (h *Handler) Allow(ctx context.Context, req Request) (Response, string, error) {
	acct, ok := req.account()
	if !ok {
		// Not an address: not an account of aupd; Dovecot's passdb decides.
		return Response{}, ResultAllow, nil
	}
	view, governed, err := h.accounts.Lookup(ctx, acct)
	if err != nil {
		return Response{}, "", fmt.Errorf("look up %s: %w", acct, err)
	}
	if !governed {
		return Response{}, ResultAllow, nil
	}
	d := rules.Decide(view, AccessFor(req.Protocol), h.now())
	if d.Result == rules.Allow {
		return Response{}, ResultAllow, nil
	}
	h.log.Info("login refused", "account", acct, "protocol", req.Protocol, "code", d.Code,
		"remote", req.Remote, "session", req.Session)
	if d.Masked {
		return Response{Status: -1}, ResultLockout, nil
	}
	msg, ok := messages[d.Code]
	if !ok {
		msg = "Login is not allowed for this account."
	}
	return Response{Status: -1, Msg: msg}, ResultDeny, nil
}

// Report handles command=report: the outcome of an authentication. A
// failure the policy did not cause counts toward the lockout; a success
// resets the count. Then the login goes to the account's recent logins
// (Options.Logins), which changes nothing of the answer: a failure to
// record it is logged and counted, never returned.
func (h *Handler) Report(ctx context.Context, req Request) (Response, string, error) {
	acct, ok := req.account()
	if req.Success == nil || !ok {
		return Response{}, ResultReportIgnored, nil
	}
	result, err := h.count(ctx, req, acct)
	if err != nil {
		return Response{}, "", err
	}
	h.record(ctx, req, acct)
	return Response{}, result, nil
}

// recordTimeout bounds the recording of one login, within the request's
// own bound.
const recordTimeout = 500 * time.Millisecond

// record adds the login of a report to the account's recent logins.
func (h *Handler) record(ctx context.Context, req Request, acct string) {
	if h.logins == nil || h.cfg.RecentLogins == 0 {
		return
	}
	l := Login{Time: h.now(), Result: LoginFailed, Protocol: req.Protocol, Remote: req.Remote}
	switch {
	case req.PolicyReject != nil && *req.PolicyReject:
		l.Result = LoginRefused // the password was right (check_after_auth), the policy said no
	case *req.Success:
		l.Result = LoginOK
	}
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	ok, err := h.logins.RecordLogin(ctx, acct, l)
	switch {
	case err != nil:
		h.metrics.logins.WithLabelValues(loginError).Inc()
		h.warn.Warn("record login; the answer is unchanged", "err", err)
	case ok:
		h.metrics.logins.WithLabelValues(loginRecorded).Inc()
	default:
		h.metrics.logins.WithLabelValues(loginNotGoverned).Inc()
	}
}

// count applies a report to the lockout's failure count.
func (h *Handler) count(ctx context.Context, req Request, acct string) (string, error) {
	if h.failures == nil || (req.PolicyReject != nil && *req.PolicyReject) {
		return ResultReportIgnored, nil
	}
	if *req.Success {
		if err := h.failures.Success(ctx, acct); err != nil {
			return "", err
		}
		return ResultReportSuccess, nil
	}
	// Count only accounts aupd governs, so that guessing at names that
	// are not ours fills no keys.
	view, governed, err := h.accounts.Lookup(ctx, acct)
	if err != nil {
		return "", fmt.Errorf("look up %s: %w", acct, err)
	}
	if !governed {
		return ResultReportIgnored, nil
	}
	// Failures during a lockout do not count again (and do not extend it).
	if view.EffectiveStatus(h.now()) == rules.StatusLockout {
		return ResultReportIgnored, nil
	}
	detail := strings.TrimSpace(req.Protocol + " from " + req.Remote)
	out, err := h.failures.Failure(ctx, acct, req.PWHash, detail)
	if err != nil {
		return "", err
	}
	if out.LockedOut {
		return ResultLockedOut, nil
	}
	return ResultReportFailure, nil
}

// optBool renders an optional boolean for logs.
func optBool(b *bool) string {
	if b == nil {
		return ""
	}
	return fmt.Sprint(*b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// httpError answers an error. The body is JSON with a status of 0, so that
// nothing in it can be mistaken for a refusal.
func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
	}{0, msg})
}
