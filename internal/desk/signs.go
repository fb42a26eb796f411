package desk

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// signsView is the account page's "Signs of a compromise": what an abuse
// contact needs to tell "password stolen" from "the user sent it". All of
// it is hints, at least what it says; none of it decides anything.
type signsView struct {
	// Counted are the counting events of the window, by verdict.
	Counted   int
	AtLeast   bool
	Threshold int
	ByVerdict []verdictCount
	// Senders are who sent the counted messages, from the verdict
	// events' sender field; NoSenders says the filter names none.
	Senders   []senderView
	NoSenders bool
	// Received are the client addresses the samples' Received fields
	// name, one row per address.
	Received []receivedView
	// Logins are the recent logins from Dovecot's reports.
	Logins []loginView
	// Hints are sentences about addresses seen in more than one place.
	Hints []string
}

type verdictCount struct {
	Verdict string
	N       int
}

type senderView struct {
	store.Sender
	Kind         string // addrKind of the IP
	FailedLogins bool   // the address also failed to log in
}

type receivedView struct {
	IP      string
	Kind    string
	Samples int  // in how many samples
	First   bool // the earliest Received field of a sample names it
}

type loginView struct {
	store.Login
	Kind      string
	AlsoSends bool // the address also sent counted messages (tally or Received)
}

// signs gathers the section from what the page already read (counts,
// evidence) and the account's sender tally and recent logins.
func (d *Desk) signs(ctx context.Context, v *accountView, c *store.Counts, since time.Time) (*signsView, error) {
	s := &signsView{Counted: c.Counting.Total, AtLeast: c.Counting.AtLeast, Threshold: v.Threshold}
	for _, vd := range rules.Verdicts {
		n := 0
		for _, dir := range rules.Directions {
			n += c.Counting.ByVerdict[dir][vd]
		}
		if n > 0 {
			s.ByVerdict = append(s.ByVerdict, verdictCount{string(vd), n})
		}
	}
	senders, err := d.st.Senders(ctx, v.Address, since)
	if err != nil {
		return nil, err
	}
	logins, err := d.st.Logins(ctx, v.Address, time.Time{})
	if err != nil {
		return nil, err
	}
	s.NoSenders = len(senders) == 0 && s.Counted > 0
	failed := map[string]int{} // address -> failed logins
	for _, l := range logins {
		if l.Result == store.LoginFailed && l.IP != "" {
			failed[l.IP] += l.Count
		}
	}
	sent := map[string]bool{}
	for _, x := range senders {
		sv := senderView{Sender: x, Kind: kindOf(x.IP)}
		sv.FailedLogins = failed[x.IP] > 0
		if x.IP != "" {
			sent[x.IP] = true
		}
		s.Senders = append(s.Senders, sv)
	}
	// The Received fields of the samples: each address once.
	at := map[string]int{}
	for _, ev := range v.Evidence {
		if ev.Doc == nil {
			continue
		}
		for _, smp := range ev.Doc.Samples {
			seen := map[string]bool{}
			for _, h := range smp.Hops {
				if seen[h.IP] {
					continue
				}
				seen[h.IP] = true
				i, ok := at[h.IP]
				if !ok {
					i = len(s.Received)
					at[h.IP] = i
					s.Received = append(s.Received, receivedView{IP: h.IP, Kind: h.Kind})
				}
				s.Received[i].Samples++
				s.Received[i].First = s.Received[i].First || h.First
				if h.Kind == "" {
					sent[h.IP] = true
				}
			}
		}
	}
	slices.SortStableFunc(s.Received, func(a, b receivedView) int {
		switch {
		case a.First != b.First:
			if a.First {
				return -1
			}
			return 1
		}
		return b.Samples - a.Samples
	})
	okFrom := map[string]bool{}
	for _, l := range logins {
		lv := loginView{Login: l, Kind: kindOf(l.IP), AlsoSends: l.IP != "" && sent[l.IP]}
		if l.Result != store.LoginFailed && l.IP != "" {
			okFrom[l.IP] = true
		}
		s.Logins = append(s.Logins, lv)
	}
	// Hints: an address that guessed at the password and sent spam, or
	// that guessed and then got in.
	var ips []string
	for ip := range failed {
		ips = append(ips, ip)
	}
	slices.Sort(ips)
	for _, ip := range ips {
		switch {
		case sent[ip]:
			s.Hints = append(s.Hints, ip+" failed to log in ("+plural(failed[ip], "time")+") and also sent counted messages: someone may have guessed the password.")
		case okFrom[ip]:
			s.Hints = append(s.Hints, ip+" failed to log in ("+plural(failed[ip], "time")+") and then logged in: someone may have guessed the password.")
		}
	}
	return s, nil
}

// kindOf is addrKind of a textual address ("" for none or a public one).
func kindOf(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	return addrKind(a)
}

func plural(n int, word string) string {
	if n == 1 {
		return "once"
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// statusBadge is one badge beside the address: what the account can and
// cannot do now, in words.
type statusBadge struct {
	Text  string
	Class string // status-active, status-suspended, status-<status>
}

// badges says what is in force: the status when it is not active, then
// the suspended services by what they stop; "active" alone when nothing
// is.
func badges(status rules.Status, suspended map[rules.Service]store.Suspension) []statusBadge {
	var out []statusBadge
	switch status {
	case rules.StatusLocked:
		out = append(out, statusBadge{"locked", "status-locked"})
	case rules.StatusLockout:
		out = append(out, statusBadge{"locked out (failed logins)", "status-lockout"})
	case rules.StatusMaintenance:
		out = append(out, statusBadge{"maintenance", "status-maintenance"})
	case rules.StatusClosed:
		out = append(out, statusBadge{"closed", "status-closed"})
	}
	has := func(svcs ...rules.Service) []string {
		var names []string
		for _, s := range svcs {
			if _, ok := suspended[s]; ok {
				names = append(names, describeService(string(s)))
			}
		}
		return names
	}
	if n := has(rules.ServiceSend, rules.ServiceWebmailSend); len(n) == 2 {
		out = append(out, statusBadge{"sending suspended", "status-suspended"})
	} else if len(n) == 1 {
		out = append(out, statusBadge{n[0] + " suspended", "status-suspended"})
	}
	if len(has(rules.ServiceReceive)) > 0 {
		out = append(out, statusBadge{"receiving suspended", "status-suspended"})
	}
	if n := has(rules.ServiceIMAP, rules.ServicePOP3, rules.ServiceWebmail); len(n) == 3 {
		out = append(out, statusBadge{"reading mail suspended", "status-suspended"})
	} else if len(n) > 0 {
		out = append(out, statusBadge{strings.Join(n, ", ") + " suspended", "status-suspended"})
	}
	if len(out) == 0 {
		out = append(out, statusBadge{"active", "status-active"})
	}
	return out
}

// Plain words for reason codes, beside the code. Codes come from aupd
// (aup_violation, failed_logins, lockout_ended), from the desk and the
// API's defaults (admin, abuse_contact), and from API callers, who may
// use any code (user_request is the documented example); an unknown one
// is shown as it is.
var reasonWords = map[string]string{
	rules.ReasonAUPViolation: "too many spam messages",
	rules.ReasonAdmin:        "the provider's decision",
	rules.ReasonAbuseContact: "the company's abuse contact's decision",
	rules.ReasonLockout:      "too many failed logins",
	store.ReasonLockoutEnded: "the lockout ended",
	"user_request":           "at the user's request",
}

// suspensionWords say the same of a suspension.
var suspensionWords = map[string]string{
	rules.ReasonAdmin:        "suspended by the provider",
	rules.ReasonAbuseContact: "suspended by the company's abuse contact",
}

func reasonText(code string) string { return reasonWords[code] }

func suspensionReason(code string) string {
	if w, ok := suspensionWords[code]; ok {
		return w
	}
	return reasonWords[code]
}
