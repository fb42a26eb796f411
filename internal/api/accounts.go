package api

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

func (s *server) accountJSON(a *store.Account) *Account {
	now := s.opts.Now()
	out := &Account{
		Address: a.Address, Exists: a.Exists, Provisioned: a.Provisioned, Licensed: a.Licensed(now),
		Type: a.Type, Company: a.Company,
		Status: a.View().EffectiveStatus(now), StatusInfo: a.StatusInfo,
		Suspended: a.Suspended(), Suspensions: []apitypes.ServiceSuspension{}, Version: a.Version,
	}
	if out.Status == rules.StatusLockout && !a.LockoutUntil.IsZero() {
		t := a.LockoutUntil
		out.LockoutUntil = &t
	}
	if !a.Created.IsZero() {
		t := a.Created
		out.Created = &t
	}
	for _, svc := range rules.Services {
		if sus, ok := a.Suspensions[svc]; ok {
			out.Suspensions = append(out.Suspensions, apitypes.ServiceSuspension{Service: svc, Suspension: sus})
		}
	}
	return out
}

// target reads and checks the {account} of the path and the token's scope.
func (s *server) target(w http.ResponseWriter, r *http.Request, p *principal) (string, bool) {
	raw := r.PathValue("account")
	addr, err := events.NormalizeAccount(raw)
	if err != nil {
		s.fail(w, r, errf(http.StatusBadRequest, "bad_account", "account %q: %v", clip(raw, 100), err))
		return "", false
	}
	if !s.inScope(p, addr) {
		s.fail(w, r, errNoAccount())
		return "", false
	}
	return addr, true
}

// inScope reports whether the token may see the account: a token of one
// company sees the accounts of that company's domains.
func (s *server) inScope(p *principal, addr string) bool {
	if p.company == "" {
		return true
	}
	c, ok := s.dir.ByAccount(addr)
	return ok && c.ID == p.company
}

func (s *server) getAccount(w http.ResponseWriter, r *http.Request, p *principal) {
	addr, ok := s.target(w, r, p)
	if !ok {
		return
	}
	ctx := r.Context()
	a, err := s.store.Account(ctx, addr)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	// An address without a record may still be counting (verdicts make
	// no record): it is shown with its counts, as the desk shows it, and
	// reading it creates nothing. Only an address with neither is missing.
	counts, err := s.store.Counts(ctx, addr, store.CountQuery{Window: s.opts.Window, Cap: s.opts.CapOf(addr), Floor: a.Floor, Now: s.opts.Now()})
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if !a.Exists && counts.Counting.Total == 0 && counts.Other.Total == 0 {
		s.fail(w, r, errNoAccount())
		return
	}
	out := s.accountJSON(a)
	out.Counts = counts
	since := counts.WindowStart
	if a.Floor.After(since) {
		since = a.Floor // counted before the last reinstatement: no longer counting
	}
	if out.Senders, err = s.store.Senders(ctx, addr, since); err != nil {
		s.failErr(w, r, err)
		return
	}
	if out.Logins, err = s.store.Logins(ctx, addr, time.Time{}); err != nil {
		s.failErr(w, r, err)
		return
	}
	if !a.Exists && a.Company == "" {
		if c, ok := s.dir.ByAccount(addr); ok {
			out.Company = c.ID
		}
	}
	if s.opts.Threshold != nil {
		out.Threshold = s.opts.Threshold(addr)
	}
	if a.LastAUP != nil {
		ls := &LastSuspension{AUPSuspension: a.LastAUP, InForce: a.AUP != "" && a.AUP == a.LastAUP.ID}
		if s.opts.Notices != nil {
			st, ok, err := s.opts.Notices.NoticeState(ctx, addr, a.LastAUP.ID)
			if err != nil {
				s.failErr(w, r, err)
				return
			}
			if ok {
				ls.Notice = st
			}
		}
		out.LastSuspension = ls
	}
	writeJSON(w, http.StatusOK, out)
}

var codePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// maxReason bounds a reason's length in bytes.
const maxReason = 1000

// changeActor checks a change request's reason and code and returns the
// actor of the change: the token p, and why.
func changeActor(c ChangeRequest, p *principal) (store.Actor, *apiError) {
	reason := strings.TrimSpace(c.Reason)
	if reason == "" {
		return store.Actor{}, errf(http.StatusBadRequest, "reason_required", "a reason is required for every change")
	}
	if len(reason) > maxReason {
		return store.Actor{}, errf(http.StatusBadRequest, "invalid", "the reason is longer than %d bytes", maxReason)
	}
	code := c.Code
	if code == "" {
		code = rules.DefaultCode(p.company)
	}
	if !codePattern.MatchString(code) {
		return store.Actor{}, errf(http.StatusBadRequest, "invalid", "code %q: use 1 to 32 of a-z 0-9 _, starting with a letter", clip(code, 40))
	}
	return store.Actor{Name: p.name, Reason: code, Note: reason, Scope: p.company, Via: store.ViaToken}, nil
}

// change runs one change of an account: it makes sure a new account of a
// known domain records its company first, runs op, publishes the account
// events at once and answers with the account as it is now.
// onlyExisting says that the change can do nothing to an account without
// a record (reinstate, unlock...), which then answers unchanged and is not
// created.
func (s *server) change(w http.ResponseWriter, r *http.Request, addr string, by store.Actor, onlyExisting bool, op func(ctx context.Context) (*store.Op, error)) {
	ctx := r.Context()
	a, err := s.store.Account(ctx, addr)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if !a.Exists && onlyExisting {
		writeJSON(w, http.StatusOK, ChangeResponse{Changed: false, Account: s.accountJSON(a)})
		return
	}
	changed := false
	if c, ok := s.dir.ByAccount(addr); ok && (!a.Exists || a.Company == "") {
		o, err := s.store.SetAccount(ctx, addr, "", c.ID, by)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		changed = o.Changed
	}
	o, err := op(ctx)
	if changed || (err == nil && o.Changed) {
		s.publish(ctx, addr)
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if o.Changed {
		s.log.Info("account changed", "account", addr, "actor", by.Name, "reason", by.Reason, "note", by.Note, "events", len(o.Events))
	}
	if a, err = s.store.Account(ctx, addr); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ChangeResponse{Changed: o.Changed, Account: s.accountJSON(a)})
}

// publish publishes an account's pending events. A failure leaves them in
// the outbox for the next flush; the change itself is committed.
func (s *server) publish(ctx context.Context, addr string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := s.store.FlushOutbox(ctx, addr, s.opts.Publisher); err != nil {
		s.metrics.publish.Inc()
		s.log.Warn("publish account events; they stay in the outbox", "account", addr, "err", err)
	}
}

// begin does what every change starts with: resolve the account within
// the token's scope, decode the body into req and take the actor from
// cr, its ChangeRequest.
// On false the answer is already written.
func (s *server) begin(w http.ResponseWriter, r *http.Request, p *principal, req any, cr *ChangeRequest) (string, store.Actor, bool) {
	addr, ok := s.target(w, r, p)
	if !ok {
		return "", store.Actor{}, false
	}
	if e := decode(r, req, false); e != nil {
		s.fail(w, r, e)
		return "", store.Actor{}, false
	}
	by, e := changeActor(*cr, p)
	if e != nil {
		s.fail(w, r, e)
		return "", store.Actor{}, false
	}
	return addr, by, true
}

// services is the suspend and the reinstate endpoint: required says
// whether the request must name services (reinstate without them lifts
// all), and only reinstating leaves an account aupd has no record of as
// it is.
func (s *server) services(required bool, op func(ctx context.Context, addr string, svcs []rules.Service, by store.Actor) (*store.Op, error)) func(http.ResponseWriter, *http.Request, *principal) {
	return func(w http.ResponseWriter, r *http.Request, p *principal) {
		var req SuspendRequest
		addr, by, ok := s.begin(w, r, p, &req, &req.ChangeRequest)
		if !ok {
			return
		}
		if e := checkServices(req.Services, required); e != nil {
			s.fail(w, r, e)
			return
		}
		s.change(w, r, addr, by, !required, func(ctx context.Context) (*store.Op, error) {
			return op(ctx, addr, req.Services, by)
		})
	}
}

func checkServices(svcs []rules.Service, required bool) *apiError {
	if required && len(svcs) == 0 {
		return errf(http.StatusBadRequest, "invalid", "services is required: one or more of send, receive, imap, pop3, webmail, webmail_send")
	}
	for _, svc := range svcs {
		if !svc.Valid() {
			return errf(http.StatusBadRequest, "invalid", "unknown service %q: use send, receive, imap, pop3, webmail, webmail_send", clip(string(svc), 40))
		}
	}
	return nil
}

// statusAction is one of the status endpoints.
type statusAction struct {
	to rules.Status
	// from, if set, lists the statuses the action applies to; from any
	// other (but the target) it is refused with 409.
	from []rules.Status
	// notFrom lists statuses the action refuses to leave.
	notFrom []rules.Status
	hint    string
}

var (
	actionLock        = statusAction{to: rules.StatusLocked, notFrom: []rules.Status{rules.StatusClosed}, hint: "activate it first"}
	actionUnlock      = statusAction{to: rules.StatusActive, from: []rules.Status{rules.StatusLocked, rules.StatusLockout}, hint: "unlock ends a lock or a lockout; use activate"}
	actionEndLockout  = statusAction{to: rules.StatusActive, from: []rules.Status{rules.StatusLockout}, hint: "end-lockout ends a lockout only"}
	actionMaintenance = statusAction{to: rules.StatusMaintenance, notFrom: []rules.Status{rules.StatusClosed}, hint: "activate it first"}
	actionClose       = statusAction{to: rules.StatusClosed}
	actionActivate    = statusAction{to: rules.StatusActive}
)

func (act statusAction) guard(cur rules.Status, _ *store.Account) error {
	if (act.from != nil && !slices.Contains(act.from, cur)) || slices.Contains(act.notFrom, cur) {
		return errf(http.StatusConflict, "wrong_status", "the account is %s: %s", cur, act.hint)
	}
	return nil
}

func (s *server) status(act statusAction) func(http.ResponseWriter, *http.Request, *principal) {
	return func(w http.ResponseWriter, r *http.Request, p *principal) {
		var req ChangeRequest
		addr, by, ok := s.begin(w, r, p, &req, &req)
		if !ok {
			return
		}
		// Nothing can make an account without a record active: it is.
		onlyExisting := act.to == rules.StatusActive
		s.change(w, r, addr, by, onlyExisting, func(ctx context.Context) (*store.Op, error) {
			return s.store.SetStatusIf(ctx, addr, act.to, time.Time{}, by, act.guard)
		})
	}
}

func (s *server) putAccount(w http.ResponseWriter, r *http.Request, p *principal) {
	var req AccountRequest
	addr, by, ok := s.begin(w, r, p, &req, &req.ChangeRequest)
	if !ok {
		return
	}
	if req.Type != "" && !req.Type.Valid() {
		s.fail(w, r, errf(http.StatusBadRequest, "invalid", "type %q: use mailbox or forward", clip(string(req.Type), 40)))
		return
	}
	if req.Company != "" {
		if _, ok := s.dir.ByID(req.Company); !ok || (p.company != "" && req.Company != p.company) {
			s.fail(w, r, errf(http.StatusBadRequest, "invalid", "unknown company %q", clip(req.Company, 70)))
			return
		}
	}
	// PUT provisions: the account is one of the provider's mailboxes, a
	// licence whatever its state (store.Provision).
	s.change(w, r, addr, by, false, func(ctx context.Context) (*store.Op, error) {
		_, op, err := s.store.Provision(ctx, addr, req.Type, req.Company, by)
		return op, err
	})
}

func (s *server) deleteAccount(w http.ResponseWriter, r *http.Request, p *principal) {
	addr, ok := s.target(w, r, p)
	if !ok {
		return
	}
	var req ChangeRequest
	if e := decode(r, &req, true); e != nil {
		s.fail(w, r, e)
		return
	}
	if q := r.URL.Query().Get("reason"); q != "" && req.Reason == "" {
		req.Reason = q
	}
	by, e := changeActor(req, p)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	op, err := s.store.Delete(r.Context(), addr, by)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.publish(r.Context(), addr)
	s.log.Info("account deleted", "account", addr, "actor", by.Name, "note", by.Note)
	writeJSON(w, http.StatusOK, ChangeResponse{Changed: op.Changed, Account: nil})
}

func (s *server) history(w http.ResponseWriter, r *http.Request, p *principal) {
	addr, ok := s.target(w, r, p)
	if !ok {
		return
	}
	q := r.URL.Query()
	if e := onlyParams(q, "offset", "limit"); e != nil {
		s.fail(w, r, e)
		return
	}
	offset, e := intParam(q, "offset", 0, 0, 1000)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	limit, e := intParam(q, "limit", 50, 1, 1000)
	if e != nil {
		s.fail(w, r, e)
		return
	}
	entries, err := s.store.History(r.Context(), addr, offset, limit+1)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	page := HistoryPage{Entries: entries}
	if len(entries) > limit {
		page.Entries = entries[:limit]
		next := offset + limit
		page.NextOffset = &next
	}
	writeJSON(w, http.StatusOK, page)
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (s *server) evidence(w http.ResponseWriter, r *http.Request, p *principal) {
	addr, ok := s.target(w, r, p)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if !idPattern.MatchString(id) {
		s.fail(w, r, errf(http.StatusBadRequest, "invalid", "bad suspension id"))
		return
	}
	if s.opts.Notices == nil {
		s.fail(w, r, errf(http.StatusNotFound, "not_found", "no evidence for suspension %s (notices are not available)", id))
		return
	}
	data, ok, err := s.opts.Notices.Evidence(r.Context(), addr, id)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if !ok {
		s.fail(w, r, errf(http.StatusNotFound, "not_found", "no evidence for suspension %s", id))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="evidence.txt"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(data)
}

func (s *server) listAccounts(w http.ResponseWriter, r *http.Request, p *principal) {
	q := r.URL.Query()
	if e := onlyParams(q, "company", "status", "suspended", "cursor", "limit"); e != nil {
		s.fail(w, r, e)
		return
	}
	lq := store.ListQuery{Company: q.Get("company"), Status: rules.Status(q.Get("status")), Cursor: q.Get("cursor"), Now: s.opts.Now()}
	if lq.Status != "" && !lq.Status.Valid() {
		s.fail(w, r, errf(http.StatusBadRequest, "invalid", "status %q: use active, locked, lockout, maintenance or closed", clip(string(lq.Status), 40)))
		return
	}
	if v := q.Get("suspended"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.fail(w, r, errf(http.StatusBadRequest, "invalid", "suspended must be true or false"))
			return
		}
		lq.Suspended = b
	}
	var e *apiError
	if lq.Limit, e = intParam(q, "limit", 100, 1, store.MaxListLimit); e != nil {
		s.fail(w, r, e)
		return
	}
	if p.company != "" {
		if lq.Company != "" && lq.Company != p.company {
			s.fail(w, r, errf(http.StatusForbidden, "forbidden", "token %s is limited to company %s", p.name, p.company))
			return
		}
		lq.Company = p.company
		lq.Match = func(a *store.Account) bool { return s.inScope(p, a.Address) }
	}
	page, err := s.store.List(r.Context(), lq)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	out := AccountList{Accounts: make([]*Account, 0, len(page.Accounts)), NextCursor: page.Next}
	for _, a := range page.Accounts {
		out.Accounts = append(out.Accounts, s.accountJSON(a))
	}
	writeJSON(w, http.StatusOK, out)
}

// InvalidLoginMessage is the message of a masked decision: the same as for
// a wrong password.
const InvalidLoginMessage = "Invalid username or password."

var publicMessages = map[string]string{
	rules.CodeLocked:           "This account is locked. Please contact your administrator.",
	rules.CodeMaintenance:      "This mailbox is under maintenance. Please try again later.",
	rules.CodeClosed:           "This account is closed.",
	rules.CodeForward:          "This address has no mailbox.",
	rules.CodeSendSuspended:    "Sending mail is suspended for this account. Please contact your administrator.",
	rules.CodeWebmailSendSusp:  "Sending mail is suspended for this account. Please contact your administrator.",
	rules.CodeReceiveSuspended: "Receiving mail is suspended for this account.",
	rules.CodeIMAPSuspended:    "IMAP access is suspended for this account.",
	rules.CodePOP3Suspended:    "POP3 access is suspended for this account.",
	rules.CodeWebmailSuspended: "Webmail access is suspended for this account. Please contact your administrator.",
}

func (s *server) decide(w http.ResponseWriter, r *http.Request, p *principal) {
	var req DecideRequest
	if e := decode(r, &req, false); e != nil {
		s.fail(w, r, e)
		return
	}
	addr, err := events.NormalizeAccount(req.Account)
	if err != nil {
		s.fail(w, r, errf(http.StatusBadRequest, "bad_account", "account %q: %v", clip(req.Account, 100), err))
		return
	}
	if !req.Access.Valid() {
		s.fail(w, r, errf(http.StatusBadRequest, "invalid", "access %q: use one of %s", clip(string(req.Access), 40), accessList()))
		return
	}
	if !s.inScope(p, addr) {
		s.fail(w, r, errNoAccount())
		return
	}
	a, err := s.store.Account(r.Context(), addr)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	d := rules.Decide(a.View(), req.Access, s.opts.Now())
	out := DecideResponse{Account: addr, Access: req.Access, Result: d.Result, Code: d.Code, Masked: d.Masked}
	switch {
	case d.Masked:
		out.Message = InvalidLoginMessage
	case d.Result != rules.Allow:
		out.Message = publicMessages[d.Code]
	}
	writeJSON(w, http.StatusOK, out)
}

func accessList() string {
	var b []string
	for _, a := range rules.Accesses {
		b = append(b, string(a))
	}
	return strings.Join(b, ", ")
}

// onlyParams refuses query parameters the endpoint does not know, so that
// a typo does not silently list everything.
func onlyParams(q url.Values, known ...string) *apiError {
	for k := range q {
		if !slices.Contains(known, k) {
			return errf(http.StatusBadRequest, "unknown_parameter", "unknown query parameter %q; known: %s", clip(k, 40), strings.Join(known, ", "))
		}
	}
	return nil
}

func intParam(q url.Values, name string, def, lo, hi int) (int, *apiError) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, errf(http.StatusBadRequest, "invalid", "%s must be a number from %d to %d", name, lo, hi)
	}
	return n, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
