package rules

import (
	"slices"
	"time"
)

// Access is something a user or a mail server tries to do with an account.
type Access string

// The accesses that enforcement points ask about.
const (
	LoginIMAP    Access = "login_imap"
	LoginPOP3    Access = "login_pop3"
	LoginWebmail Access = "login_webmail"
	LoginSMTP    Access = "login_smtp" // SMTP AUTH
	SendSMTP     Access = "send_smtp"
	SendWebmail  Access = "send_webmail"
	Receive      Access = "receive"
)

// Accesses lists every access in a stable order.
var Accesses = []Access{LoginIMAP, LoginPOP3, LoginWebmail, LoginSMTP, SendSMTP, SendWebmail, Receive}

// Valid reports whether a is a known access.
func (a Access) Valid() bool { return slices.Contains(Accesses, a) }

// Result is the answer to an access question.
type Result string

// The results. Defer and Bounce only answer Receive.
const (
	Allow  Result = "allow"
	Deny   Result = "deny"
	Defer  Result = "defer"  // temporary failure: the sending MTA queues the mail
	Bounce Result = "bounce" // permanent failure
)

// Reason codes of a Decision. They are stable and machine-readable.
const (
	CodeOK               = "ok"
	CodeLocked           = "account_locked"
	CodeLockout          = "lockout"
	CodeMaintenance      = "maintenance"
	CodeClosed           = "account_closed"
	CodeForward          = "forward_account"
	CodeSendSuspended    = "send_suspended"
	CodeReceiveSuspended = "receive_suspended"
	CodeIMAPSuspended    = "imap_suspended"
	CodePOP3Suspended    = "pop3_suspended"
	CodeWebmailSuspended = "webmail_suspended"
	CodeWebmailSendSusp  = "webmail_send_suspended"
)

// Decision is the answer for one access.
type Decision struct {
	Result Result `json:"result"`
	// Code says why, for logs, the admin API and the enforcement point.
	Code string `json:"code"`
	// Masked is set when the user must be told only "invalid login": the
	// account is locked out, and an intruder must get no hint of it.
	Masked bool `json:"-"`
}

// AccountView is what a decision needs to know about an account.
type AccountView struct {
	Type         AccountType
	Status       Status
	LockoutUntil time.Time // when a lockout ends by itself; zero: no end set
	Suspended    []Service
}

// EffectiveStatus is the account's status at now: a lockout whose time has
// passed has ended by itself.
func (a AccountView) EffectiveStatus(now time.Time) Status {
	s := a.Status
	if s == "" {
		s = StatusActive
	}
	if s == StatusLockout && !a.LockoutUntil.IsZero() && !now.Before(a.LockoutUntil) {
		return StatusActive
	}
	return s
}

func (a AccountView) suspended(s Service) bool { return slices.Contains(a.Suspended, s) }

// Decide answers whether access is allowed for the account at now, following
// the status and service-suspension tables of domain.md.
func Decide(a AccountView, access Access, now time.Time) Decision {
	status := a.EffectiveStatus(now)
	if access == Receive {
		return decideReceive(a, status)
	}
	if a.Type == TypeForward {
		// A forward-only address has no mailbox to log in to or send from.
		return Decision{Result: Deny, Code: CodeForward}
	}
	if d, denied := loginStatus(status); denied {
		return d
	}
	blocking, ok := blockingServices[access]
	if !ok {
		return Decision{Result: Deny, Code: "unknown_access"}
	}
	for _, b := range blocking {
		if a.suspended(b.s) {
			return Decision{Result: Deny, Code: b.code}
		}
	}
	return Decision{Result: Allow, Code: CodeOK}
}

type blocker struct {
	s    Service
	code string
}

// blockingServices lists, for each access other than Receive, the service
// suspensions that deny it. SMTP AUTH itself stays allowed with sending
// suspended, so that the user is told "sending suspended" at MAIL FROM, not a
// false "wrong password".
var blockingServices = map[Access][]blocker{
	LoginIMAP:    {{ServiceIMAP, CodeIMAPSuspended}},
	LoginPOP3:    {{ServicePOP3, CodePOP3Suspended}},
	LoginWebmail: {{ServiceWebmail, CodeWebmailSuspended}},
	LoginSMTP:    nil,
	SendSMTP:     {{ServiceSend, CodeSendSuspended}},
	SendWebmail:  {{ServiceWebmail, CodeWebmailSuspended}, {ServiceWebmailSend, CodeWebmailSendSusp}},
}

// loginStatus denies every login-like access for statuses that deny login.
func loginStatus(s Status) (Decision, bool) {
	switch s {
	case StatusLocked:
		return Decision{Result: Deny, Code: CodeLocked}, true
	case StatusLockout:
		return Decision{Result: Deny, Code: CodeLockout, Masked: true}, true
	case StatusMaintenance:
		return Decision{Result: Deny, Code: CodeMaintenance}, true
	case StatusClosed:
		return Decision{Result: Deny, Code: CodeClosed}, true
	}
	return Decision{}, false
}

func decideReceive(a AccountView, s Status) Decision {
	switch {
	case s == StatusClosed:
		return Decision{Result: Bounce, Code: CodeClosed}
	case a.suspended(ServiceReceive):
		return Decision{Result: Bounce, Code: CodeReceiveSuspended}
	case s == StatusMaintenance:
		return Decision{Result: Defer, Code: CodeMaintenance}
	}
	return Decision{Result: Allow, Code: CodeOK}
}
