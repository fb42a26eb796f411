package desk

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// LinkActor is the actor name of a change made through a notice's
// signed link (its via is store.ViaLink).
const LinkActor = "notice-link"

// linkView is what the account page shows in link mode.
type linkView struct {
	Path    string // the link's page, without the host
	CSRF    string
	Expires time.Time
	// Usable says the bound suspension is in force and the link has not
	// reinstated yet; Services are the services it lifts.
	Usable   bool
	Services []string
	UsedAt   time.Time
	// Gone says the bound suspension is no longer in force.
	Gone bool
}

func (d *Desk) usedKey(lk *Link) string {
	return store.AccountKey(d.prefix, lk.Account, "dl:"+lk.Suspension)
}

// link checks the link of the path and answers for a bad one.
func (d *Desk) link(w http.ResponseWriter, r *http.Request) (*Link, bool) {
	if d.linkLimited(w, r) {
		return nil, false
	}
	lk, err := d.links.Parse(r.PathValue("token"), d.now())
	d.linkFailed(r, err)
	switch {
	case errors.Is(err, ErrLinkExpired):
		d.fail(w, r, nil, http.StatusGone, "Link expired",
			"This link expired on "+lk.Expires.Format("2006-01-02 15:04 UTC")+". Sign in with your API token, or ask your provider for help.")
		return nil, false
	case err != nil:
		d.fail(w, r, nil, http.StatusNotFound, "Not a valid link", "This link is not valid. Use the link exactly as it is in the notice.")
		return nil, false
	}
	return lk, true
}

// linkLimited answers 429 to a client over the limit of failed
// authentications: a link's signature is a secret it may not guess at.
func (d *Desk) linkLimited(w http.ResponseWriter, r *http.Request) bool {
	if d.opts.Limit == nil {
		return false
	}
	retry, blocked := d.opts.Limit.Blocked(r.Context(), r)
	if blocked {
		w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds()+0.999)))
		d.fail(w, r, nil, http.StatusTooManyRequests, "Too many attempts", "Too many invalid links or tokens from your address. Wait a few minutes and try again.")
	}
	return blocked
}

// linkFailed counts a link whose signature does not hold (not one that
// expired or was used: those were real).
func (d *Desk) linkFailed(r *http.Request, err error) {
	if d.opts.Limit != nil && errors.Is(err, ErrLinkInvalid) {
		d.opts.Limit.Fail(r.Context(), r)
	}
}

// linkScope is the company a link acts for: the account's company, or a
// scope that matches no company when it has none. Either way MayLift
// never lets a link lift what the provider set.
func (d *Desk) linkScope(addr string) string {
	if c, ok := d.dir.ByAccount(addr); ok {
		return c.ID
	}
	return "-"
}

// boundServices are the services suspended by the link's suspension,
// when it is the AUP suspension in force.
func boundServices(a *store.Account, lk *Link) []rules.Service {
	if a.AUP == "" || a.AUP != lk.Suspension {
		return nil
	}
	var out []rules.Service
	for _, svc := range rules.Services {
		if sus, ok := a.Suspensions[svc]; ok && sus.ID == lk.Suspension {
			out = append(out, svc)
		}
	}
	return out
}

func (d *Desk) linkPage(w http.ResponseWriter, r *http.Request) {
	lk, ok := d.link(w, r)
	if !ok {
		return
	}
	d.showLink(w, r, lk, http.StatusOK, "")
}

func (d *Desk) showLink(w http.ResponseWriter, r *http.Request, lk *Link, status int, msg string) {
	ctx := r.Context()
	v, err := d.view(ctx, lk.Account, d.linkScope(lk.Account))
	if err != nil {
		d.internal(w, r, nil, err)
		return
	}
	if v == nil {
		d.fail(w, r, nil, http.StatusNotFound, "Not a valid link", "This link is not valid. Use the link exactly as it is in the notice.")
		return
	}
	a, err := d.st.Account(ctx, lk.Account)
	if err != nil {
		d.internal(w, r, nil, err)
		return
	}
	lv := &linkView{Path: "/desk/l/" + lk.token, CSRF: d.links.csrf(lk), Expires: lk.Expires}
	for _, svc := range boundServices(a, lk) {
		lv.Services = append(lv.Services, string(svc))
	}
	used, err := d.rdb.Get(ctx, d.usedKey(lk)).Int64()
	if err == nil {
		lv.UsedAt = time.UnixMilli(used).UTC()
	}
	lv.Gone = len(lv.Services) == 0
	lv.Usable = !lv.Gone && lv.UsedAt.IsZero()
	p := &accountPage{base: d.base(nil, lk.Account), A: v, Link: lv}
	p.Error = msg
	if r.URL.Query().Get("done") == "reinstate" {
		p.Flash = flashes["reinstate"]
	}
	d.render(w, r, status, "account", p)
}

var errNotInForce = errors.New("the suspension of this link is no longer in force")

// linkReinstate lifts the link's suspension once, with a reason.
func (d *Desk) linkReinstate(w http.ResponseWriter, r *http.Request) {
	lk, ok := d.link(w, r)
	if !ok {
		return
	}
	if !equal(r.PostFormValue("csrf"), d.links.csrf(lk)) {
		d.fail(w, r, nil, http.StatusForbidden, "Form expired", errNoCSRF.Error()+". Open the link from the notice again.")
		return
	}
	note, err := reason(r)
	if err != nil {
		d.showLink(w, r, lk, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	// Once: the mark is taken before the change and given back if
	// nothing changed.
	key := d.usedKey(lk)
	first, err := d.rdb.SetNX(ctx, key, d.now().UnixMilli(), lk.Expires.Sub(d.now())+24*time.Hour).Result()
	if err != nil {
		d.internal(w, r, nil, err)
		return
	}
	if !first {
		d.showLink(w, r, lk, http.StatusConflict, "This link has already been used to reinstate; it now shows the account only.")
		return
	}
	by := store.Actor{Name: LinkActor, Reason: rules.ReasonAbuseContact, Note: note, Scope: d.linkScope(lk.Account), Via: store.ViaLink}
	op, err := d.change(ctx, lk.Account, by, true, func(ctx context.Context) (*store.Op, error) {
		a, err := d.st.Account(ctx, lk.Account)
		if err != nil {
			return nil, err
		}
		svcs := boundServices(a, lk)
		if len(svcs) == 0 {
			return nil, errNotInForce
		}
		return d.st.ReinstateIf(ctx, lk.Account, svcs, by, func(a *store.Account) error {
			if len(boundServices(a, lk)) == 0 {
				return errNotInForce
			}
			return nil
		})
	})
	if err != nil || !op.Changed {
		d.rdb.Del(context.WithoutCancel(ctx), key)
	}
	switch {
	case errors.Is(err, errNotInForce), errors.Is(err, store.ErrNotFound), err == nil && !op.Changed:
		d.showLink(w, r, lk, http.StatusConflict, "This suspension is no longer in force; there is nothing to reinstate with this link.")
		return
	case err != nil:
		var le *store.LiftError
		if errors.As(err, &le) {
			d.showLink(w, r, lk, http.StatusForbidden, "Not reinstated: "+le.Error()+".")
			return
		}
		d.internal(w, r, nil, err)
		return
	}
	if op.Changed {
		d.actions.WithLabelValues("reinstate", store.ViaLink).Inc()
	}
	http.Redirect(w, r, "/desk/l/"+lk.token+"?done=reinstate", http.StatusSeeOther)
}
