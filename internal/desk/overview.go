package desk

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/rules"
)

type overviewPage struct {
	base
	Suspended   []suspendedRow
	Near        []nearRow
	NearShown   bool
	Lockouts    []lockoutRow
	Failed      []notifier.Delivery
	FailedShown bool
	DoneAccount string
}

type suspendedRow struct {
	Address  string
	Services []string
	Reason   string
	Words    string // the reason in plain words; an AUP suspension's names its rule
	Rule     string // an AUP suspension's rule
	Why      string // and its figures in words (ruleView.Why)
	Actor    string
	Since    time.Time
	Notice   string // the notice's delivery state, "" for none
	Liftable []string
	Provider bool // something the viewer may not lift is suspended
}

type nearRow struct {
	Address   string
	Count     int
	AtLeast   bool
	Threshold int
	Chart     *chart
}

type lockoutRow struct {
	Address string
	Until   time.Time
	Note    string
}

// chart is a bar chart of counts per hour, drawn as inline SVG.
type chart struct {
	W, H  int
	Bars  []bar
	Label string
}

type bar struct {
	X, Y, W, H int
	Title      string
}

func newChart(counts []int, end time.Time) *chart {
	const w, h, bw = 6, 36, 5
	c := &chart{W: len(counts) * w, H: h}
	top := 1
	for _, n := range counts {
		top = max(top, n)
	}
	var parts []string
	for i, n := range counts {
		bh := n * (h - 2) / top
		if n > 0 {
			bh = max(bh, 2)
		}
		from := end.Add(time.Duration(i-len(counts)) * time.Hour).UTC()
		c.Bars = append(c.Bars, bar{X: i * w, Y: h - bh, W: bw, H: bh, Title: fmt.Sprintf("%s: %d", from.Format("15:04"), n)})
		parts = append(parts, fmt.Sprint(n))
	}
	c.Label = "Counted messages per hour, oldest first: " + strings.Join(parts, ", ")
	return c
}

const overviewLimit = 100

func (d *Desk) listQuery(s *session) store.ListQuery {
	q := store.ListQuery{Limit: overviewLimit, Now: d.now()}
	if s.company != "" {
		q.Company = s.company
		q.Match = func(a *store.Account) bool { return d.inScope(s.company, a.Address) }
	}
	return q
}

func (d *Desk) overview(w http.ResponseWriter, r *http.Request, s *session) {
	p, err := d.overviewData(r.Context(), s)
	if err != nil {
		d.internal(w, r, s, err)
		return
	}
	p.Flash = flashes[r.URL.Query().Get("done")]
	if addr, err := events.NormalizeAccount(r.URL.Query().Get("account")); err == nil && p.Flash != "" && d.inScope(s.company, addr) {
		p.DoneAccount = addr
	}
	d.render(w, r, http.StatusOK, "overview", p)
}

func (d *Desk) overviewData(ctx context.Context, s *session) (*overviewPage, error) {
	p := &overviewPage{base: d.base(s, "Overview")}
	q := d.listQuery(s)
	q.Suspended = true
	page, err := d.st.List(ctx, q)
	if err != nil {
		return nil, err
	}
	for _, a := range page.Accounts {
		row := suspendedRow{Address: a.Address, Services: a.Suspended()}
		for _, svc := range rules.Services {
			sus, ok := a.Suspensions[svc]
			if !ok {
				continue
			}
			if row.Since.IsZero() || sus.At.Before(row.Since) {
				row.Since, row.Reason, row.Actor = sus.At, sus.Reason, sus.Actor
				row.Words, row.Rule, row.Why = reasonOfSuspension(sus, a.LastAUP), "", ""
				if a.LastAUP != nil && sus.ID == a.LastAUP.ID && sus.Reason == rules.ReasonAUPViolation {
					r := ruleOf(a.LastAUP)
					row.Rule, row.Why = r.Code, r.Why
				}
			}
			if store.MayLift(s.company, a, sus) {
				row.Liftable = append(row.Liftable, string(svc))
			} else {
				row.Provider = true
			}
		}
		if a.AUP != "" {
			n, err := d.delivery(ctx, a.Address, a.AUP)
			if err != nil {
				return nil, err
			}
			if n != nil {
				row.Notice = n.State
			}
		}
		p.Suspended = append(p.Suspended, row)
	}
	slices.SortFunc(p.Suspended, func(a, b suspendedRow) int { return b.Since.Compare(a.Since) })

	if d.opts.Trends != nil {
		p.NearShown = true
		if p.Near, err = d.near(ctx, s); err != nil {
			return nil, err
		}
	}

	q = d.listQuery(s)
	q.Status = rules.StatusLockout
	if page, err = d.st.List(ctx, q); err != nil {
		return nil, err
	}
	for _, a := range page.Accounts {
		row := lockoutRow{Address: a.Address, Until: a.LockoutUntil}
		if a.StatusInfo != nil {
			row.Note = a.StatusInfo.Note
		}
		p.Lockouts = append(p.Lockouts, row)
	}

	if d.opts.Notices != nil {
		p.FailedShown = true
		failed, err := d.opts.Notices.Failed(ctx, 200)
		if err != nil {
			return nil, err
		}
		for _, f := range failed {
			if d.inScope(s.company, f.Account) && len(p.Failed) < 20 {
				p.Failed = append(p.Failed, f)
			}
		}
	}
	return p, nil
}

// near lists the accounts near their threshold in the session's scope,
// each re-read: the list is a hint.
func (d *Desk) near(ctx context.Context, s *session) ([]nearRow, error) {
	addrs, err := d.opts.Trends.NearThreshold(ctx, 500)
	if err != nil {
		return nil, err
	}
	now := d.now()
	var out []nearRow
	for _, addr := range addrs {
		if len(out) == 20 {
			break
		}
		if _, err := events.NormalizeAccount(addr); err != nil || !d.inScope(s.company, addr) {
			continue
		}
		a, err := d.st.Account(ctx, addr)
		if err != nil {
			return nil, err
		}
		if a.AUP != "" { // suspended already: listed above
			continue
		}
		c, err := d.st.Counts(ctx, addr, store.CountQuery{Window: d.opts.Window, Cap: d.capOf(addr), Floor: a.Floor, Now: now})
		if err != nil {
			return nil, err
		}
		th := d.opts.Threshold(addr)
		if c.Counting.Total == 0 || 2*c.Counting.Total < th {
			continue
		}
		hours, err := d.opts.Trends.HourlyCounts(ctx, addr, 24*time.Hour, now)
		if err != nil {
			return nil, err
		}
		out = append(out, nearRow{Address: addr, Count: c.Counting.Total, AtLeast: c.Counting.AtLeast, Threshold: th, Chart: newChart(hours, now)})
	}
	return out, nil
}

type searchPage struct {
	base
	Query   string
	Results []*store.Account
	More    bool
	Scanned bool
}

// search finds accounts by address: an exact address opens its page, a
// part of one lists the matches in scope.
func (d *Desk) search(w http.ResponseWriter, r *http.Request, s *session) {
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	if len(q) > events.MaxAccount {
		q = q[:events.MaxAccount]
	}
	p := &searchPage{base: d.base(s, "Search"), Query: q}
	if q == "" {
		d.render(w, r, http.StatusOK, "search", p)
		return
	}
	ctx := r.Context()
	if addr, err := events.NormalizeAccount(q); err == nil && d.inScope(s.company, addr) {
		a, err := d.st.Account(ctx, addr)
		if err != nil {
			d.internal(w, r, s, err)
			return
		}
		if a.Exists {
			http.Redirect(w, r, accountPath(addr), http.StatusSeeOther)
			return
		}
	}
	lq := d.listQuery(s)
	lq.Limit = 51
	scope := lq.Match
	lq.Match = func(a *store.Account) bool {
		return strings.Contains(a.Address, q) && (scope == nil || scope(a))
	}
	page, err := d.st.List(ctx, lq)
	if err != nil {
		d.internal(w, r, s, err)
		return
	}
	p.Scanned = true
	p.Results = page.Accounts
	if len(p.Results) > 50 {
		p.Results, p.More = p.Results[:50], true
	}
	d.render(w, r, http.StatusOK, "search", p)
}
