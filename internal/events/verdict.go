// Package events holds aupd's wire formats: the verdict events publishers
// send (the pinned v1 contract described in docs/events.md) and the account
// events aupd publishes on every change of an account's state.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aupd/aupd/rules"
)

// Limits of the v1 contract and of what aupd accepts.
const (
	MaxPayload   = 1 << 20 // 1 MiB
	MaxIDLen     = 128
	MaxAccount   = 254
	maxLocalPart = 64
)

// SubjectPrefix is the prefix of every verdict subject; the last token is
// the direction.
const SubjectPrefix = "aup.verdict."

// Verdict is one verdict event.
type Verdict struct {
	ID        string          `json:"id"`
	Time      time.Time       `json:"time"`
	Direction rules.Direction `json:"direction"`
	Account   string          `json:"account"`
	Verdict   rules.Verdict   `json:"verdict"`
	Score     *float64        `json:"score,omitempty"`
	Source    string          `json:"source,omitempty"`
	Message   *Message        `json:"message,omitempty"`
	Sender    *Sender         `json:"sender,omitempty"`

	msg []byte // the undecoded message, until Msg
	// the JSON text of message.subject and message.raw, for Fingerprint
	subject, raw []byte
}

// Message is the judged message, kept as evidence.
type Message struct {
	MessageID string   `json:"message_id,omitempty"`
	From      string   `json:"from,omitempty"`
	To        []string `json:"to,omitempty"`
	Subject   string   `json:"subject,omitempty"`
	Date      string   `json:"date,omitempty"`
	Raw       string   `json:"raw,omitempty"`
}

// Sender is the client that submitted the judged message, as the
// publisher saw it: its address, the login it authenticated with
// (outbound mail), and the name it gave in HELO/EHLO. Every field is
// optional; nil when the event names none.
type Sender struct {
	IP    string `json:"ip,omitempty"` // canonical form (netip.Addr.String, IPv4-mapped addresses as IPv4)
	Login string `json:"login,omitempty"`
	Helo  string `json:"helo,omitempty"`
}

// Limits of the sender's text fields, in bytes.
const (
	MaxLogin = 254
	MaxHelo  = 255
)

// Reason codes of an invalid event. They are stable: they appear in the
// dead-letter header Aup-Reason and in the metric label "reason".
const (
	ReasonTooLarge        = "payload_too_large"
	ReasonInvalidUTF8     = "invalid_utf8"
	ReasonInvalidJSON     = "invalid_json"
	ReasonMissingField    = "missing_field"
	ReasonInvalidField    = "invalid_field"
	ReasonUnknownSubject  = "unknown_subject"
	ReasonDirectionClash  = "direction_mismatch"
	ReasonTimeInFuture    = "time_in_future"
	ReasonUnsupportedType = "not_an_object"
	// ReasonRedacted: the account's local part is a redaction placeholder
	// (Redacted), not a mailbox.
	ReasonRedacted = "redacted_account"
)

// InvalidError says why an event is invalid. It is permanent: the event is
// dead-lettered, never retried.
type InvalidError struct {
	Reason string // one of the Reason* codes
	Field  string // the offending field, when there is one
	Detail string
}

func (e *InvalidError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Reason, e.Field, e.Detail)
	}
	return fmt.Sprintf("%s: %s", e.Reason, e.Detail)
}

func invalid(reason, field, format string, args ...any) error {
	return &InvalidError{Reason: reason, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// AsInvalid returns the InvalidError in err's chain, if any.
func AsInvalid(err error) (*InvalidError, bool) {
	var ie *InvalidError
	ok := errors.As(err, &ie)
	return ie, ok
}

// DirectionOfSubject returns the direction a verdict subject names.
func DirectionOfSubject(subject string) (rules.Direction, error) {
	d, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok || !rules.Direction(d).Valid() {
		return "", invalid(ReasonUnknownSubject, "", "subject %q is not aup.verdict.{outbound,inbound,complaint}", clip(subject, 200))
	}
	return rules.Direction(d), nil
}

// required lists the fields that must be present, in the order they are
// reported.
var required = []string{"id", "time", "direction", "account", "verdict"}

// ParseVerdict decodes and validates one verdict event that arrived on
// subject, in one pass. now and skew bound how far in the future its time
// may be. The account is returned in lower case. Unknown fields are
// ignored, so that publishers can add optional fields; the contract's keys
// must be spelled exactly and appear once. The message is checked but
// decoded only when Msg asks for it.
func ParseVerdict(subject string, data []byte, now time.Time, skew time.Duration) (*Verdict, error) {
	if len(data) > MaxPayload {
		return nil, invalid(ReasonTooLarge, "", "payload is %d bytes, the limit is %d", len(data), MaxPayload)
	}
	dir, err := DirectionOfSubject(subject)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(data) {
		return nil, invalid(ReasonInvalidUTF8, "", "payload is not valid UTF-8")
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return nil, invalid(ReasonInvalidJSON, "", "payload is not JSON")
		}
		return nil, invalid(ReasonUnsupportedType, "", "payload is JSON but not an object")
	}
	v, err := decodeVerdict(trimmed)
	if err != nil {
		return nil, err
	}
	if err := v.validate(dir, now, skew); err != nil {
		return nil, err
	}
	return v, nil
}

// fingerprintBody bounds how much of a message body a fingerprint reads.
const fingerprintBody = 4096

// castagnoli is CRC-32C's table, which hash/crc32 computes with the CPU's
// CRC instruction where there is one.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Fingerprint identifies a message's content, so that evidence prefers
// different messages over copies of one campaign: a CRC-32C of the
// subject, trimmed and lower-cased, and of the start of the body, without
// the headers that differ per copy. Three samples need only be told apart,
// so a fast 32-bit checksum does (a collision keeps a copy of one message
// as a sample, nothing more). For a parsed event it reads the message's
// JSON text as it came, decoding nothing (two copies of a campaign encoded
// alike fingerprint alike); for a built one, its fields. 0 when there is
// no message.
func (v *Verdict) Fingerprint() uint32 {
	var subject, raw []byte
	var crlf2, lf2 string
	switch {
	case v.subject != nil || v.raw != nil:
		subject, raw = v.subject, v.raw
		crlf2, lf2 = `\r\n\r\n`, `\n\n`
	case v.Message != nil:
		subject, raw = []byte(v.Message.Subject), []byte(v.Message.Raw)
		crlf2, lf2 = "\r\n\r\n", "\n\n"
	default:
		return 0
	}
	crc := updateLower(0, bytes.TrimSpace(subject))
	crc = crc32.Update(crc, castagnoli, zero)
	body := raw
	if i := bytes.Index(body, []byte(crlf2)); i >= 0 {
		body = body[i+len(crlf2):]
	} else if i := bytes.Index(body, []byte(lf2)); i >= 0 {
		body = body[i+len(lf2):]
	}
	if len(body) > fingerprintBody {
		body = body[:fingerprintBody]
	}
	return crc32.Update(crc, castagnoli, body)
}

// updateLower is crc32.Update(crc, castagnoli, bytes.ToLower(s)), from the
// table a byte at a time while s is ASCII, so that nothing is copied.
func updateLower(crc uint32, s []byte) uint32 {
	crc = ^crc
	for i, c := range s {
		if c >= utf8.RuneSelf {
			return crc32.Update(^crc, castagnoli, bytes.ToLower(s[i:]))
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		crc = castagnoli[byte(crc)^c] ^ crc>>8
	}
	return ^crc
}

// zero separates the subject from the body in a fingerprint.
var zero = []byte{0}

// Msg returns the judged message, decoding it on first use; nil when the
// event has none (or, having been checked by ParseVerdict, it cannot be
// decoded).
func (v *Verdict) Msg() *Message {
	if v.Message == nil && len(v.msg) > 0 {
		var m Message
		if json.Unmarshal(v.msg, &m) == nil {
			v.Message = &m
		}
		v.msg = nil
	}
	return v.Message
}

func (v *Verdict) validate(subjectDir rules.Direction, now time.Time, skew time.Duration) error {
	if n := utf8.RuneCountInString(v.ID); n < 1 || n > MaxIDLen {
		return invalid(ReasonInvalidField, "id", "must be 1 to %d characters, got %d", MaxIDLen, n)
	}
	if !v.Direction.Valid() {
		return invalid(ReasonInvalidField, "direction", "must be outbound, inbound or complaint, got %q", clip(string(v.Direction), 40))
	}
	if v.Direction != subjectDir {
		return invalid(ReasonDirectionClash, "direction", "field says %s but the subject says %s", v.Direction, subjectDir)
	}
	if !v.Verdict.Valid() {
		return invalid(ReasonInvalidField, "verdict", "must be spam, phish, virus or ham, got %q", clip(string(v.Verdict), 40))
	}
	acct, err := NormalizeAccount(v.Account)
	if err != nil {
		return invalid(ReasonInvalidField, "account", "%v", err)
	}
	if Redacted(acct) {
		return invalid(ReasonRedacted, "account", "%q is a redacted address (its local part hides the mailbox), not an account", clip(acct, 80))
	}
	v.Account = acct
	if v.Time.IsZero() || v.Time.Year() < 2000 {
		return invalid(ReasonInvalidField, "time", "timestamp %s is not plausible", v.Time.Format(time.RFC3339))
	}
	if v.Time.After(now.Add(skew)) {
		return invalid(ReasonTimeInFuture, "time", "%s is more than %s ahead of this worker's clock", v.Time.Format(time.RFC3339), skew)
	}
	return nil
}

// NormalizeAccount checks that s is a plain addr-spec local@domain (a
// dot-atom local part; quoted local parts and display names are refused)
// and returns it in lower case.
func NormalizeAccount(s string) (string, error) {
	if len(s) > MaxAccount {
		return "", fmt.Errorf("address is longer than %d bytes", MaxAccount)
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return "", errors.New("not an address of the form local@domain")
	}
	local, domain := s[:at], s[at+1:]
	if len(local) > maxLocalPart {
		return "", fmt.Errorf("local part is longer than %d bytes", maxLocalPart)
	}
	if !dotAtom(local, isAtext) {
		return "", errors.New("local part is not a dot-atom")
	}
	if !validDomain(domain) {
		return "", errors.New("domain is not a host name")
	}
	return strings.ToLower(s), nil
}

// Redacted reports whether an address's local part is a redaction
// placeholder, as feedback loops and some filters write instead of the
// mailbox: three or more of one character among x, X and * (such as
// "xxxxxxx"), or "redacted" in any case. Such an address names no
// account, so a verdict about it cannot count against one.
func Redacted(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	local := addr[:at]
	if strings.EqualFold(local, "redacted") {
		return true
	}
	if len(local) < 3 {
		return false
	}
	for i := 0; i < len(local); i++ {
		switch c := local[i]; {
		case c != 'x' && c != 'X' && c != '*':
			return false
		case c == '*' && local[0] != '*', c != '*' && local[0] == '*':
			return false
		}
	}
	return true
}

// NormalizeDomain checks a domain name and returns it in lower case.
func NormalizeDomain(s string) (string, error) {
	if !validDomain(s) {
		return "", fmt.Errorf("%q is not a host name", clip(s, 80))
	}
	return strings.ToLower(s), nil
}

func validDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

func dotAtom(s string, ok func(byte) bool) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !ok(s[i]) {
			return false
		}
	}
	return true
}

// isAtext reports RFC 5322 atext.
func isAtext(c byte) bool { return atext[c] }

var atext = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~", byte(c)) >= 0
	}
	return t
}()

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
