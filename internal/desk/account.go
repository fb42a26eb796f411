package desk

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/rules"
)

// accountView is an account as its page shows it.
type accountView struct {
	Address      string
	Company      string
	CompanyName  string
	Status       rules.Status
	Badges       []statusBadge
	StatusInfo   *store.StatusInfo
	LockoutUntil time.Time
	Suspensions  []suspensionView
	// Liftable are the suspended services the viewer may lift;
	// Unsuspended the services that can still be suspended.
	Liftable    []string
	Unsuspended []string
	Threshold   int
	// NoRecord: aupd counts verdicts for the address but holds no record
	// of it (never provisioned, seen only in verdicts).
	NoRecord    bool
	Counts      []countRow
	Counting    int
	AtLeast     bool
	WindowStart time.Time
	History     []store.HistoryEntry
	Evidence    []evidenceView
	Signs       *signsView
	AUP         *aupView
	// NoSamples says that the last crossing, a volume limit's, had no
	// samples, when no evidence.txt of it is kept to say so.
	NoSamples string
	CanLock   bool
	CanUnlock bool
	CanEnd    bool
}

type suspensionView struct {
	Service string
	store.Suspension
	Words    string // the reason in plain words; an AUP suspension's names its rule
	AUP      bool
	Liftable bool
}

type countRow struct {
	Direction string
	Counting  int
	Other     int
}

type evidenceView struct {
	ID     string
	Text   string       // evidence.txt as kept
	Doc    *evidenceDoc // the same as messages; nil: shown as Text
	Notice *notifier.Delivery
}

// aupView is the last crossing of an AUP rule.
type aupView struct {
	*events.AUPSuspension
	Rule    ruleView
	InForce bool
	Notice  *notifier.Delivery
}

type accountPage struct {
	base
	A    *accountView
	Form string // where the action forms post, without the action
	Link *linkView
}

// inScope is the API's rule: a session of one company sees the accounts
// of that company's domains.
func (d *Desk) inScope(company, addr string) bool {
	if company == "" {
		return true
	}
	c, ok := d.dir.ByAccount(addr)
	return ok && c.ID == company
}

// target reads the {account} of the path within the session's scope; an
// account outside it is missing.
func (d *Desk) target(r *http.Request, s *session) (string, bool) {
	addr, err := events.NormalizeAccount(r.PathValue("account"))
	if err != nil || !d.inScope(s.company, addr) {
		return "", false
	}
	return addr, true
}

// view reads everything the account page shows; nil when the account
// does not exist: aupd has no record of it and counts nothing for it (an
// address seen only in verdicts has counts but no record until its
// first change). scope decides what the viewer may lift.
func (d *Desk) view(ctx context.Context, addr, scope string) (*accountView, error) {
	a, err := d.st.Account(ctx, addr)
	if err != nil {
		return nil, err
	}
	now := d.now()
	c, err := d.st.Counts(ctx, addr, store.CountQuery{Window: d.opts.Window, Cap: d.capOf(addr), Floor: a.Floor, Now: now})
	if err != nil {
		return nil, err
	}
	if !a.Exists && c.Counting.Total == 0 && c.Other.Total == 0 {
		return nil, nil
	}
	v := &accountView{
		Address: addr, Company: a.Company, CompanyName: a.Company, Status: a.View().EffectiveStatus(now),
		StatusInfo: a.StatusInfo, Threshold: d.opts.Threshold(addr), NoRecord: !a.Exists,
	}
	if a.Company == "" {
		if co, ok := d.dir.ByAccount(addr); ok {
			v.Company, v.CompanyName = co.ID, co.ID
		}
	}
	if co, ok := d.dir.ByID(v.Company); ok && co.Name != "" {
		v.CompanyName = co.Name
	}
	if v.Status == rules.StatusLockout {
		v.LockoutUntil = a.LockoutUntil
	}
	v.Badges = badges(v.Status, a.Suspensions)
	for _, svc := range rules.Services {
		sus, ok := a.Suspensions[svc]
		if !ok {
			if a.Type != rules.TypeForward || svc == rules.ServiceReceive {
				v.Unsuspended = append(v.Unsuspended, string(svc))
			}
			continue
		}
		sv := suspensionView{Service: string(svc), Suspension: sus, Words: reasonOfSuspension(sus, a.LastAUP),
			AUP: a.AUP != "" && sus.ID == a.AUP, Liftable: store.MayLift(scope, a, sus)}
		v.Suspensions = append(v.Suspensions, sv)
		if sv.Liftable {
			v.Liftable = append(v.Liftable, string(svc))
		}
	}
	v.CanLock = v.Status != rules.StatusLocked && v.Status != rules.StatusClosed
	v.CanUnlock = v.Status == rules.StatusLocked || v.Status == rules.StatusLockout
	v.CanEnd = v.Status == rules.StatusLockout

	v.Counting, v.AtLeast, v.WindowStart = c.Counting.Total, c.Counting.AtLeast, c.WindowStart
	for _, dir := range rules.Directions {
		v.Counts = append(v.Counts, countRow{Direction: string(dir), Counting: c.Counting.ByDirection[dir], Other: c.Other.ByDirection[dir]})
	}
	if v.History, err = d.st.History(ctx, addr, 0, 100); err != nil {
		return nil, err
	}
	// Evidence: the last crossing's, then every suspension named by the
	// state or the history, newest first, at most five.
	var ids []string
	if a.LastAUP != nil {
		ids = append(ids, a.LastAUP.ID)
	}
	for _, sv := range v.Suspensions {
		ids = append(ids, sv.ID)
	}
	for _, h := range v.History {
		if (h.Action == "suspend" || h.Action == events.TypeSuspended) && h.ID != "" {
			ids = append(ids, h.ID)
		}
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] || len(v.Evidence) == 5 {
			continue
		}
		seen[id] = true
		ev, err := d.evidence(ctx, addr, id)
		if err != nil {
			return nil, err
		}
		if ev != nil {
			v.Evidence = append(v.Evidence, *ev)
		}
	}
	since := c.WindowStart
	if a.Floor.After(since) {
		since = a.Floor
	}
	if v.Signs, err = d.signs(ctx, v, c, since); err != nil {
		return nil, err
	}
	if a.LastAUP != nil {
		v.AUP = &aupView{AUPSuspension: a.LastAUP, Rule: ruleOf(a.LastAUP), InForce: a.AUP != "" && a.AUP == a.LastAUP.ID}
		if v.AUP.Notice, err = d.delivery(ctx, addr, a.LastAUP.ID); err != nil {
			return nil, err
		}
		if a.LastAUP.Volume != nil && len(a.LastAUP.Samples) == 0 &&
			!slices.ContainsFunc(v.Evidence, func(e evidenceView) bool { return e.ID == a.LastAUP.ID }) {
			v.NoSamples = notifier.VolumeWithoutSamples(v.AUP.Rule.Code)
		}
	}
	return v, nil
}

func (d *Desk) capOf(addr string) int {
	if d.opts.CapOf == nil {
		return 0
	}
	return d.opts.CapOf(addr)
}

func (d *Desk) delivery(ctx context.Context, addr, id string) (*notifier.Delivery, error) {
	if d.opts.Notices == nil {
		return nil, nil
	}
	n, err := d.opts.Notices.Delivery(ctx, addr, id)
	if errors.Is(err, notifier.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &n, nil
}

func (d *Desk) evidence(ctx context.Context, addr, id string) (*evidenceView, error) {
	if d.opts.Notices == nil {
		return nil, nil
	}
	b, err := d.opts.Notices.Evidence(ctx, addr, id)
	if errors.Is(err, notifier.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	n, err := d.delivery(ctx, addr, id)
	if err != nil {
		return nil, err
	}
	return &evidenceView{ID: id, Text: string(b), Doc: parseEvidence(string(b)), Notice: n}, nil
}

func accountPath(addr string) string { return "/desk/accounts/" + url.PathEscape(addr) }

// flashes are the messages a redirect after a change shows, by the done
// parameter; nothing from the request is shown as such.
var flashes = map[string]string{
	"reinstate":   "Reinstated. The reason is on the history.",
	"suspend":     "Suspended. The reason is on the history.",
	"lock":        "Locked.",
	"unlock":      "Unlocked.",
	"end-lockout": "The lockout has ended.",
	"note":        "Note added to the history.",
	"unchanged":   "Nothing changed: the account already was so.",
}

func (d *Desk) accountPage(w http.ResponseWriter, r *http.Request, s *session) {
	addr, ok := d.target(r, s)
	if !ok {
		d.notFound(w, r, s)
		return
	}
	d.showAccount(w, r, s, addr, http.StatusOK, "")
}

func (d *Desk) showAccount(w http.ResponseWriter, r *http.Request, s *session, addr string, status int, msg string) {
	v, err := d.view(r.Context(), addr, s.company)
	if err != nil {
		d.internal(w, r, s, err)
		return
	}
	if v == nil {
		d.notFound(w, r, s)
		return
	}
	p := &accountPage{base: d.base(s, addr), A: v, Form: accountPath(addr)}
	p.Flash, p.Error = flashes[r.URL.Query().Get("done")], msg
	d.render(w, r, status, "account", p)
}

func (d *Desk) evidenceFile(w http.ResponseWriter, r *http.Request, s *session) {
	addr, ok := d.target(r, s)
	if !ok {
		d.notFound(w, r, s)
		return
	}
	ev, err := d.evidence(r.Context(), addr, r.PathValue("id"))
	if err != nil {
		d.internal(w, r, s, err)
		return
	}
	if ev == nil {
		d.fail(w, r, s, http.StatusNotFound, "No evidence", "There is no evidence for this suspension.")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="evidence.txt"`)
	_, _ = w.Write([]byte(ev.Text))
}

// actionError is a refusal shown on the account page.
type actionError struct {
	status int
	msg    string
}

func (e *actionError) Error() string { return e.msg }

// reason reads the form's required reason.
func reason(r *http.Request) (string, error) {
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	switch {
	case reason == "":
		return "", &actionError{http.StatusBadRequest, "A reason is required: say why, it is kept on the history."}
	case len(reason) > 1000:
		return "", &actionError{http.StatusBadRequest, "The reason is longer than 1000 bytes."}
	}
	return reason, nil
}

func services(r *http.Request, required bool) ([]rules.Service, error) {
	var out []rules.Service
	for _, v := range r.PostForm["service"] {
		svc := rules.Service(v)
		if !svc.Valid() {
			return nil, &actionError{http.StatusBadRequest, "Unknown service."}
		}
		if !slices.Contains(out, svc) {
			out = append(out, svc)
		}
	}
	if required && len(out) == 0 {
		return nil, &actionError{http.StatusBadRequest, "Choose at least one service."}
	}
	return out, nil
}

// act runs one action of the account page (or the overview): the role,
// the scope, the CSRF token, the reason, then the store operation, as the
// API does.
func (d *Desk) act(w http.ResponseWriter, r *http.Request, s *session) {
	action := r.PathValue("action")
	if !slices.Contains([]string{"reinstate", "suspend", "lock", "unlock", "end-lockout", "note"}, action) {
		d.fail(w, r, s, http.StatusNotFound, "No such page", "There is no page at this address.")
		return
	}
	addr, ok := d.target(r, s)
	if !ok {
		d.notFound(w, r, s)
		return
	}
	if !equal(r.PostFormValue("csrf"), s.csrf) {
		d.fail(w, r, s, http.StatusForbidden, "Form expired", errNoCSRF.Error()+". Reload the page and try again.")
		return
	}
	if !s.CanAct() {
		d.fail(w, r, s, http.StatusForbidden, "Not allowed", "Your token has role "+string(s.role)+"; changes need role abuse or admin.")
		return
	}
	op, err := d.do(r, s, addr, action)
	var ae *actionError
	var le *store.LiftError
	switch {
	case errors.Is(err, store.ErrNotFound):
		d.notFound(w, r, s)
		return
	case errors.As(err, &le):
		err = &actionError{http.StatusForbidden, "Not reinstated: " + le.Error() + "."}
	case errors.Is(err, store.ErrForwardAccess):
		err = &actionError{http.StatusConflict, "A forward address can only have receiving suspended."}
	case errors.Is(err, store.ErrConflict):
		err = &actionError{http.StatusConflict, "The account changed at the same time; try again."}
	}
	if errors.As(err, &ae) {
		d.showAccount(w, r, s, addr, ae.status, ae.msg)
		return
	}
	if err != nil {
		d.internal(w, r, s, err)
		return
	}
	done := action
	if !op.Changed {
		done = "unchanged"
	} else {
		d.actions.WithLabelValues(action, store.ViaDesk).Inc()
	}
	to := accountPath(addr) + "?done=" + done
	if r.PostFormValue("back") == "overview" {
		to = "/desk/?done=" + done + "&account=" + url.QueryEscape(addr)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// do runs the action for a desk session.
func (d *Desk) do(r *http.Request, s *session, addr, action string) (*store.Op, error) {
	if action == "note" {
		// A case note: its text is the note, it needs no reason, and an
		// account without a record gets none (ErrNotFound).
		text, err := store.CheckNote(r.PostFormValue("text"))
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), store.ErrInvalid.Error()+": ")
			return nil, &actionError{http.StatusBadRequest, "Note not added: " + msg + "."}
		}
		by := store.Actor{Name: s.name, Reason: rules.DefaultCode(s.company), Note: text, Scope: s.company, Via: store.ViaDesk}
		if _, err := d.st.AddNote(r.Context(), addr, by); err != nil {
			return nil, err
		}
		return &store.Op{Changed: true}, nil
	}
	note, err := reason(r)
	if err != nil {
		return nil, err
	}
	by := store.Actor{Name: s.name, Reason: rules.DefaultCode(s.company), Note: note, Scope: s.company, Via: store.ViaDesk}
	ctx := r.Context()
	switch action {
	case "reinstate", "suspend":
		svcs, err := services(r, true)
		if err != nil {
			return nil, err
		}
		return d.change(ctx, addr, by, action != "suspend", func(ctx context.Context) (*store.Op, error) {
			if action == "suspend" {
				return d.st.Suspend(ctx, addr, svcs, by)
			}
			return d.st.Reinstate(ctx, addr, svcs, by)
		})
	}
	to, guard := statusAction(action)
	return d.change(ctx, addr, by, to == rules.StatusActive, func(ctx context.Context) (*store.Op, error) {
		return d.st.SetStatusIf(ctx, addr, to, time.Time{}, by, guard)
	})
}

// statusAction is the API's lock, unlock and end-lockout.
func statusAction(action string) (rules.Status, store.StatusGuard) {
	refuse := func(cur rules.Status, hint string) error {
		return &actionError{http.StatusConflict, "The account is " + string(cur) + ": " + hint + "."}
	}
	switch action {
	case "lock":
		return rules.StatusLocked, func(cur rules.Status, _ *store.Account) error {
			if cur == rules.StatusClosed {
				return refuse(cur, "a closed account is not locked")
			}
			return nil
		}
	case "unlock":
		return rules.StatusActive, func(cur rules.Status, _ *store.Account) error {
			if cur != rules.StatusLocked && cur != rules.StatusLockout {
				return refuse(cur, "unlock ends a lock or a lockout")
			}
			return nil
		}
	}
	return rules.StatusActive, func(cur rules.Status, _ *store.Account) error {
		if cur != rules.StatusLockout {
			return refuse(cur, "there is no lockout to end")
		}
		return nil
	}
}

// change runs one change as the API does: a known domain's account gets
// its company recorded first, then op runs, then the account events are
// published at once (a failure leaves them to the outbox sweep).
// onlyExisting says that the change can do nothing to an account without
// a record (reinstate, unlock, end a lockout): such an account is missing
// (store.ErrNotFound, the desk's 404) and is not created.
func (d *Desk) change(ctx context.Context, addr string, by store.Actor, onlyExisting bool, op func(ctx context.Context) (*store.Op, error)) (*store.Op, error) {
	a, err := d.st.Account(ctx, addr)
	if err != nil {
		return nil, err
	}
	if !a.Exists && onlyExisting {
		return nil, store.ErrNotFound
	}
	changed := false
	if c, ok := d.dir.ByAccount(addr); ok && (!a.Exists || a.Company == "") {
		o, err := d.st.SetAccount(ctx, addr, "", c.ID, by)
		if err != nil {
			return nil, err
		}
		changed = o.Changed
	}
	o, err := op(ctx)
	if changed || (err == nil && o.Changed) {
		d.publish(ctx, addr)
	}
	if err != nil {
		return nil, err
	}
	if o.Changed {
		d.log.Info("account changed", "account", addr, "actor", by.Name, "via", by.Via, "reason", by.Reason, "note", by.Note)
	}
	return o, nil
}

func (d *Desk) publish(ctx context.Context, addr string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := d.st.FlushOutbox(ctx, addr, d.opts.Publisher); err != nil {
		d.log.Warn("publish account events; they stay in the outbox", "account", addr, "err", err)
	}
}
