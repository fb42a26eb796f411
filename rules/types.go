// Package rules holds aupd's pure decisions: given counts, an account's
// state, a policy and a time, it answers what should happen. It performs no
// I/O, reads no clock and imports nothing from the rest of the project, so
// every decision can be table-tested and replayed.
package rules

import "fmt"

// Direction is where a verdict came from: the last token of its subject.
type Direction string

// The directions of the v1 event contract.
const (
	Outbound  Direction = "outbound"
	Inbound   Direction = "inbound"
	Complaint Direction = "complaint"
)

// Directions lists every direction in a stable order.
var Directions = []Direction{Outbound, Inbound, Complaint}

// Valid reports whether d is a direction of the contract.
func (d Direction) Valid() bool { return d == Outbound || d == Inbound || d == Complaint }

// Verdict is the filter's judgement of one message.
type Verdict string

// The verdicts of the v1 event contract.
const (
	Spam  Verdict = "spam"
	Phish Verdict = "phish"
	Virus Verdict = "virus"
	Ham   Verdict = "ham"
)

// Verdicts lists every verdict in a stable order.
var Verdicts = []Verdict{Spam, Phish, Virus, Ham}

// Valid reports whether v is a verdict of the contract.
func (v Verdict) Valid() bool { return v == Spam || v == Phish || v == Virus || v == Ham }

// Kind packs a direction and a verdict into a number below 16, the form the
// counting store keeps next to each event.
type Kind uint8

// KindOf returns the kind of a (direction, verdict) pair. Both must be valid.
func KindOf(d Direction, v Verdict) Kind {
	return Kind(dirIndex(d)*4 + verdictIndex(v))
}

// Direction returns the kind's direction.
func (k Kind) Direction() Direction { return Directions[int(k)/4%len(Directions)] }

// Verdict returns the kind's verdict.
func (k Kind) Verdict() Verdict { return Verdicts[int(k)%4] }

func dirIndex(d Direction) int {
	for i, x := range Directions {
		if x == d {
			return i
		}
	}
	panic(fmt.Sprintf("rules: invalid direction %q", d))
}

func verdictIndex(v Verdict) int {
	for i, x := range Verdicts {
		if x == v {
			return i
		}
	}
	panic(fmt.Sprintf("rules: invalid verdict %q", v))
}

// Status is an account's one status (domain.md, "Account status").
type Status string

// The account statuses.
const (
	StatusActive      Status = "active"
	StatusLocked      Status = "locked"
	StatusLockout     Status = "lockout"
	StatusMaintenance Status = "maintenance"
	StatusClosed      Status = "closed"
)

// Statuses lists every status in a stable order.
var Statuses = []Status{StatusActive, StatusLocked, StatusLockout, StatusMaintenance, StatusClosed}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	for _, x := range Statuses {
		if x == s {
			return true
		}
	}
	return false
}

// Service is a service that can be suspended on top of the status.
type Service string

// The suspendable services.
const (
	ServiceSend        Service = "send"
	ServiceReceive     Service = "receive"
	ServiceIMAP        Service = "imap"
	ServicePOP3        Service = "pop3"
	ServiceWebmail     Service = "webmail"
	ServiceWebmailSend Service = "webmail_send"
)

// Services lists every service in a stable order.
var Services = []Service{ServiceSend, ServiceReceive, ServiceIMAP, ServicePOP3, ServiceWebmail, ServiceWebmailSend}

// Valid reports whether s is a known service.
func (s Service) Valid() bool {
	for _, x := range Services {
		if x == s {
			return true
		}
	}
	return false
}

// AUPServices are the services an AUP violation suspends: sending over SMTP
// and from webmail. Receiving and reading keep working.
var AUPServices = []Service{ServiceSend, ServiceWebmailSend}

// AccountType is mailbox or forward.
type AccountType string

// The account types. A forward account has only the receive service.
const (
	TypeMailbox AccountType = "mailbox"
	TypeForward AccountType = "forward"
)

// Valid reports whether t is a known account type.
func (t AccountType) Valid() bool { return t == TypeMailbox || t == TypeForward }

// Reason codes recorded with a suspension or a change of status.
const (
	ReasonAUPViolation = "aup_violation"
	ReasonAdmin        = "admin"
	ReasonLockout      = "failed_logins"
)

// ReasonAbuseContact is the reason code of a change made by a company's
// abuse contact (a token, desk session or link limited to one company)
// when no code is given.
const ReasonAbuseContact = "abuse_contact"

// DefaultCode is the reason code of a change that names none: what the
// actor was, the provider ("admin") or a company's abuse contact.
func DefaultCode(company string) string {
	if company != "" {
		return ReasonAbuseContact
	}
	return ReasonAdmin
}
