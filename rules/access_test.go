package rules

import (
	"slices"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// logins are the accesses of the "login (IMAP, POP3, webmail, SMTP AUTH)"
// column of domain.md's status table.
var logins = []Access{LoginIMAP, LoginPOP3, LoginWebmail, LoginSMTP}

// TestDecideStatusTable checks every row of domain.md's status table
// against every access: login is allowed only when active, and mail
// addressed to the account is delivered, queued (maintenance) or bounced
// (closed).
func TestDecideStatusTable(t *testing.T) {
	type row struct {
		status  Status
		login   Decision // every login and every send
		receive Decision
	}
	rows := []row{
		{StatusActive, Decision{Allow, CodeOK, false}, Decision{Allow, CodeOK, false}},
		{StatusLocked, Decision{Deny, CodeLocked, false}, Decision{Allow, CodeOK, false}},
		{StatusLockout, Decision{Deny, CodeLockout, true}, Decision{Allow, CodeOK, false}},
		{StatusMaintenance, Decision{Deny, CodeMaintenance, false}, Decision{Defer, CodeMaintenance, false}},
		{StatusClosed, Decision{Deny, CodeClosed, false}, Decision{Bounce, CodeClosed, false}},
	}
	if len(rows) != len(Statuses) {
		t.Fatalf("table has %d rows for %d statuses", len(rows), len(Statuses))
	}
	for _, r := range rows {
		for _, acc := range Accesses {
			want := r.login
			if acc == Receive {
				want = r.receive
			}
			a := AccountView{Type: TypeMailbox, Status: r.status}
			if got := Decide(a, acc, now); got != want {
				t.Errorf("status %s, %s: got %+v, want %+v", r.status, acc, got, want)
			}
		}
	}
}

// TestDecideEmptyStatusIsActive: an account aupd has no record of is
// active.
func TestDecideEmptyStatusIsActive(t *testing.T) {
	for _, acc := range Accesses {
		if got := Decide(AccountView{}, acc, now); got != (Decision{Allow, CodeOK, false}) {
			t.Errorf("zero account, %s: got %+v", acc, got)
		}
	}
}

// TestDecideServiceTable checks every row of domain.md's suspension table
// on an active mailbox: the suspended service is denied and everything
// else keeps working.
func TestDecideServiceTable(t *testing.T) {
	allow := Decision{Allow, CodeOK, false}
	rows := []struct {
		svc  Service
		deny map[Access]Decision // accesses the suspension stops; all others allowed
	}{
		// no mail can be sent over SMTP; SMTP AUTH itself stays allowed so
		// the user is told "sending suspended", not "wrong password".
		{ServiceSend, map[Access]Decision{SendSMTP: {Deny, CodeSendSuspended, false}}},
		// no further mail is received; reading and sending keep working.
		{ServiceReceive, map[Access]Decision{Receive: {Bounce, CodeReceiveSuspended, false}}},
		{ServiceIMAP, map[Access]Decision{LoginIMAP: {Deny, CodeIMAPSuspended, false}}},
		{ServicePOP3, map[Access]Decision{LoginPOP3: {Deny, CodePOP3Suspended, false}}},
		// webmail login is denied, and so is sending from webmail.
		{ServiceWebmail, map[Access]Decision{
			LoginWebmail: {Deny, CodeWebmailSuspended, false},
			SendWebmail:  {Deny, CodeWebmailSuspended, false},
		}},
		// reads and receives in webmail, cannot send from it.
		{ServiceWebmailSend, map[Access]Decision{SendWebmail: {Deny, CodeWebmailSendSusp, false}}},
	}
	if len(rows) != len(Services) {
		t.Fatalf("table has %d rows for %d services", len(rows), len(Services))
	}
	for _, r := range rows {
		for _, acc := range Accesses {
			want, ok := r.deny[acc]
			if !ok {
				want = allow
			}
			a := AccountView{Type: TypeMailbox, Status: StatusActive, Suspended: []Service{r.svc}}
			if got := Decide(a, acc, now); got != want {
				t.Errorf("%s suspended, %s: got %+v, want %+v", r.svc, acc, got, want)
			}
		}
	}
}

// TestDecideAUPSuspension: an AUP violation suspends send and webmail_send;
// the account can no longer send over SMTP or from webmail, but it can
// still log in, receive and view mail.
func TestDecideAUPSuspension(t *testing.T) {
	a := AccountView{Type: TypeMailbox, Status: StatusActive, Suspended: AUPServices}
	want := map[Access]Result{
		LoginIMAP: Allow, LoginPOP3: Allow, LoginWebmail: Allow, LoginSMTP: Allow,
		SendSMTP: Deny, SendWebmail: Deny, Receive: Allow,
	}
	for _, acc := range Accesses {
		if got := Decide(a, acc, now); got.Result != want[acc] {
			t.Errorf("AUP-suspended, %s: got %+v, want %s", acc, got, want[acc])
		}
	}
}

// expected is domain.md written out as plainly as possible, independent of
// Decide's structure: the status decides first (login denied, mail
// delivered, queued or bounced), then each suspended service takes away
// exactly its own part; a forward account has only receiving.
func expected(typ AccountType, st Status, sus map[Service]bool, acc Access) Result {
	if acc == Receive {
		switch {
		case st == StatusClosed || sus[ServiceReceive]:
			return Bounce
		case st == StatusMaintenance:
			return Defer
		}
		return Allow
	}
	if typ == TypeForward || st != StatusActive {
		return Deny
	}
	switch acc {
	case LoginIMAP:
		return denyIf(sus[ServiceIMAP])
	case LoginPOP3:
		return denyIf(sus[ServicePOP3])
	case LoginWebmail:
		return denyIf(sus[ServiceWebmail])
	case LoginSMTP:
		return Allow
	case SendSMTP:
		return denyIf(sus[ServiceSend])
	case SendWebmail:
		return denyIf(sus[ServiceWebmail] || sus[ServiceWebmailSend])
	}
	return Deny
}

func denyIf(b bool) Result {
	if b {
		return Deny
	}
	return Allow
}

// TestDecideAllCombinations checks every type x status x set of suspended
// services (all 64) x access against the plain reading of domain.md, and
// that only a lockout is masked.
func TestDecideAllCombinations(t *testing.T) {
	n := 0
	for _, typ := range []AccountType{TypeMailbox, TypeForward} {
		for _, st := range Statuses {
			for mask := range 1 << len(Services) {
				sus := map[Service]bool{}
				var list []Service
				for i, s := range Services {
					if mask&(1<<i) != 0 {
						sus[s] = true
						list = append(list, s)
					}
				}
				a := AccountView{Type: typ, Status: st, Suspended: list}
				for _, acc := range Accesses {
					n++
					got := Decide(a, acc, now)
					if want := expected(typ, st, sus, acc); got.Result != want {
						t.Errorf("%s %s suspended %v, %s: got %+v, want %s", typ, st, list, acc, got, want)
					}
					if got.Code == "" {
						t.Errorf("%s %s suspended %v, %s: empty code", typ, st, list, acc)
					}
					wantMasked := typ == TypeMailbox && st == StatusLockout && acc != Receive
					if got.Masked != wantMasked {
						t.Errorf("%s %s suspended %v, %s: masked %v, want %v", typ, st, list, acc, got.Masked, wantMasked)
					}
					if (got.Result == Defer || got.Result == Bounce) && acc != Receive {
						t.Errorf("%s: %s only answers receive", acc, got.Result)
					}
				}
			}
		}
	}
	if want := 2 * len(Statuses) * 64 * len(Accesses); n != want {
		t.Fatalf("checked %d cases, want %d", n, want)
	}
}

// TestDecidePrecedence pins the code given when several causes deny the
// same access, so that the enforcement points' messages stay stable.
func TestDecidePrecedence(t *testing.T) {
	tests := []struct {
		name string
		a    AccountView
		acc  Access
		want Decision
	}{
		{"status wins over a service suspension", AccountView{Status: StatusLocked, Suspended: []Service{ServiceIMAP}}, LoginIMAP, Decision{Deny, CodeLocked, false}},
		{"lockout stays masked with services suspended", AccountView{Status: StatusLockout, Suspended: []Service{ServiceIMAP, ServiceSend}}, LoginIMAP, Decision{Deny, CodeLockout, true}},
		{"closed bounces before receive suspended", AccountView{Status: StatusClosed, Suspended: []Service{ServiceReceive}}, Receive, Decision{Bounce, CodeClosed, false}},
		{"receive suspended bounces during maintenance", AccountView{Status: StatusMaintenance, Suspended: []Service{ServiceReceive}}, Receive, Decision{Bounce, CodeReceiveSuspended, false}},
		{"maintenance defers with send suspended", AccountView{Status: StatusMaintenance, Suspended: []Service{ServiceSend}}, Receive, Decision{Defer, CodeMaintenance, false}},
		{"webmail wins over webmail_send", AccountView{Suspended: []Service{ServiceWebmailSend, ServiceWebmail}}, SendWebmail, Decision{Deny, CodeWebmailSuspended, false}},
		{"send does not stop webmail sending", AccountView{Suspended: []Service{ServiceSend}}, SendWebmail, Decision{Allow, CodeOK, false}},
		{"webmail_send does not stop SMTP", AccountView{Suspended: []Service{ServiceWebmailSend}}, SendSMTP, Decision{Allow, CodeOK, false}},
		{"unknown access is denied", AccountView{}, Access("login_ftp"), Decision{Deny, "unknown_access", false}},
	}
	for _, tt := range tests {
		if got := Decide(tt.a, tt.acc, now); got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestDecideForward: a forward account has only the receive service. It
// receives unless receive is suspended or it is closed (or queued in
// maintenance), and every login or send is denied as forward_account.
func TestDecideForward(t *testing.T) {
	for _, acc := range Accesses {
		a := AccountView{Type: TypeForward, Status: StatusActive}
		got := Decide(a, acc, now)
		want := Decision{Deny, CodeForward, false}
		if acc == Receive {
			want = Decision{Allow, CodeOK, false}
		}
		if got != want {
			t.Errorf("forward, %s: got %+v, want %+v", acc, got, want)
		}
	}
	a := AccountView{Type: TypeForward, Suspended: []Service{ServiceReceive}}
	if got := Decide(a, Receive, now); got != (Decision{Bounce, CodeReceiveSuspended, false}) {
		t.Errorf("forward with receive suspended: %+v", got)
	}
}

// TestDecideLockoutExpiry: a lockout lasts until its end and then ends by
// itself; without an end it lasts until an admin ends it.
func TestDecideLockoutExpiry(t *testing.T) {
	until := now.Add(30 * time.Minute)
	tests := []struct {
		name  string
		until time.Time
		at    time.Time
		want  Status
	}{
		{"before the end", until, until.Add(-time.Millisecond), StatusLockout},
		{"well before the end", until, now, StatusLockout},
		{"at the end", until, until, StatusActive},
		{"after the end", until, until.Add(time.Hour), StatusActive},
		{"no end set", time.Time{}, now.Add(1000 * time.Hour), StatusLockout},
	}
	for _, tt := range tests {
		a := AccountView{Type: TypeMailbox, Status: StatusLockout, LockoutUntil: tt.until}
		if got := a.EffectiveStatus(tt.at); got != tt.want {
			t.Errorf("%s: effective status %s, want %s", tt.name, got, tt.want)
		}
		for _, acc := range logins {
			d := Decide(a, acc, tt.at)
			if tt.want == StatusLockout && d != (Decision{Deny, CodeLockout, true}) {
				t.Errorf("%s, %s: got %+v, want masked lockout", tt.name, acc, d)
			}
			if tt.want == StatusActive && d != (Decision{Allow, CodeOK, false}) {
				t.Errorf("%s, %s: got %+v, want allow", tt.name, acc, d)
			}
		}
	}
	// The end of a lockout applies to the lockout status only.
	for _, st := range Statuses {
		if st == StatusLockout {
			continue
		}
		a := AccountView{Status: st, LockoutUntil: now.Add(-time.Hour)}
		if got := a.EffectiveStatus(now); got != st {
			t.Errorf("%s with a past lockout end: effective %s", st, got)
		}
	}
	// A lockout that ended leaves the service suspensions in force.
	a := AccountView{Status: StatusLockout, LockoutUntil: now.Add(-time.Second), Suspended: []Service{ServiceIMAP}}
	if got := Decide(a, LoginIMAP, now); got != (Decision{Deny, CodeIMAPSuspended, false}) {
		t.Errorf("ended lockout with imap suspended: %+v", got)
	}
}

// TestAccessValid covers the access list.
func TestAccessValid(t *testing.T) {
	for _, a := range Accesses {
		if !a.Valid() {
			t.Errorf("%s not valid", a)
		}
	}
	if Access("x").Valid() || slices.Contains(Accesses, Access("")) {
		t.Error("unknown access valid")
	}
}
