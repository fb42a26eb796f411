package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// Rspamd is what rspamd's metadata_exporter posts about one scanned
// message, from any of the forms it posts (ReadRspamd).
type Rspamd struct {
	User      string   // the authenticated user; "" when the sender did not authenticate
	IP        string   // the client's address (task:get_from_ip()); "" when rspamd had none
	QueueID   string   // the MTA's queue id
	Action    string   // reject, add header, rewrite subject, soft reject, greylist, no action
	Score     *float64 // the metric score
	Symbols   []string // names of the symbols that matched
	Rcpt      []string // envelope recipients
	From      string   // envelope sender
	MessageID string
	Subject   string
	Server    string // rspamd_server: the host name of the rspamd that scanned it
	Message   []byte // the message itself, when it was posted
}

// Limits of what is read from rspamd.
const (
	maxRspamdMeta  = 1 << 20 // JSON metadata, or all X-Rspamd-* headers
	maxRecipients  = 50
	rspamdHeaderPx = "X-Rspamd-"
)

// ErrNotRspamd says the body is not one of metadata_exporter's forms.
var ErrNotRspamd = errors.New("not a metadata_exporter post")

// ReadRspamd reads what metadata_exporter's http pusher posted, in any of
// its forms:
//
//   - the json formatter (Content-Type application/json): the metadata
//     object; with json_with_message, "message" holds the message in base64;
//   - the default formatter (the message itself as the body) with
//     meta_headers = true: the metadata as X-Rspamd-* request headers;
//   - the multipart formatter (multipart/form-data): a "metadata" part of
//     JSON and a "message" part.
//
// body holds at most maxBody bytes of the request body; a longer message
// is cut (truncated says so), which only shortens its sample.
func ReadRspamd(h http.Header, body []byte) (*Rspamd, error) {
	ct, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch {
	case ct == "application/json" || (ct == "" || ct == "text/plain") && h.Get(rspamdHeaderPx+"Action") == "" && bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")):
		return rspamdJSON(body)
	case ct == "multipart/form-data":
		return rspamdMultipart(body, params["boundary"])
	case h.Get(rspamdHeaderPx+"Action") != "":
		return rspamdHeaders(h, body)
	}
	return nil, fmt.Errorf("%w: send the json, json_with_message or multipart formatter, or the default one with meta_headers = true", ErrNotRspamd)
}

// rspamdMeta is the metadata object of the json formatters.
type rspamdMeta struct {
	User      string          `json:"user"`
	IP        string          `json:"ip"`
	QID       string          `json:"qid"`
	Action    string          `json:"action"`
	Score     json.RawMessage `json:"score"`
	Symbols   json.RawMessage `json:"symbols"`
	Rcpt      json.RawMessage `json:"rcpt"`
	From      string          `json:"from"`
	MessageID string          `json:"message_id"`
	Subject   string          `json:"subject"`
	Server    string          `json:"rspamd_server"`
	Message   string          `json:"message"`
}

func rspamdJSON(body []byte) (*Rspamd, error) {
	if len(body) > maxRspamdMeta+MaxSample*2 {
		return nil, fmt.Errorf("%w: metadata of %d bytes", ErrNotRspamd, len(body))
	}
	var m rspamdMeta
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: metadata is not JSON: %w", ErrNotRspamd, err)
	}
	if m.Action == "" {
		return nil, fmt.Errorf("%w: no action in the metadata", ErrNotRspamd)
	}
	r := &Rspamd{User: known(m.User), IP: known(m.IP), QueueID: known(m.QID), Action: m.Action, From: known(m.From),
		MessageID: known(m.MessageID), Subject: known(m.Subject), Server: known(m.Server)}
	r.Score = number(m.Score)
	r.Symbols = symbolNames(m.Symbols)
	r.Rcpt = stringList(m.Rcpt)
	if m.Message != "" {
		msg, err := base64.StdEncoding.DecodeString(m.Message)
		if err != nil {
			return nil, fmt.Errorf("%w: message is not base64", ErrNotRspamd)
		}
		r.Message = msg
	}
	return r, nil
}

func rspamdMultipart(body []byte, boundary string) (*Rspamd, error) {
	if boundary == "" {
		return nil, fmt.Errorf("%w: multipart without a boundary", ErrNotRspamd)
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var r *Rspamd
	var msg []byte
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// A message cut at the body limit ends without its boundary.
			if msg != nil || r != nil {
				break
			}
			return nil, fmt.Errorf("%w: %w", ErrNotRspamd, err)
		}
		data, _ := io.ReadAll(io.LimitReader(p, int64(len(body))))
		switch p.FormName() {
		case "metadata":
			if r, err = rspamdJSON(data); err != nil {
				return nil, err
			}
		case "message":
			msg = data
		}
	}
	if r == nil {
		return nil, fmt.Errorf("%w: no metadata part", ErrNotRspamd)
	}
	if msg != nil {
		r.Message = msg
	}
	return r, nil
}

func rspamdHeaders(h http.Header, body []byte) (*Rspamd, error) {
	get := func(k string) string { return known(decodeHeader(h.Get(rspamdHeaderPx + k))) }
	r := &Rspamd{User: get("User"), IP: get("Ip"), QueueID: get("Qid"), Action: get("Action"), From: get("From"),
		Subject: get("Subject"), Server: get("Rspamd_server"), Message: body}
	r.Score = number(json.RawMessage(h.Get(rspamdHeaderPx + "Score")))
	r.Symbols = symbolNames(json.RawMessage(h.Get(rspamdHeaderPx + "Symbols")))
	r.Rcpt = stringList(json.RawMessage(h.Get(rspamdHeaderPx + "Rcpt")))
	return r, nil
}

// known maps rspamd's placeholders for a missing value ("unknown" in
// the exporter's metadata, "undef" for a missing queue id or Message-ID)
// to "".
func known(s string) string {
	s = strings.TrimSpace(s)
	if s == "unknown" || s == "undef" {
		return ""
	}
	return s
}

func number(raw json.RawMessage) *float64 {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil
	}
	return &f
}

// symbolNames reads the symbols: an array (or object) of symbol objects
// with a "name", or of names.
func symbolNames(raw json.RawMessage) []string {
	var objs []struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &objs) == nil {
		var out []string
		for _, o := range objs {
			out = append(out, o.Name)
		}
		return out
	}
	var byName map[string]json.RawMessage
	if json.Unmarshal(raw, &byName) == nil {
		var out []string
		for k := range byName {
			out = append(out, k)
		}
		return out
	}
	var names []string
	_ = json.Unmarshal(raw, &names)
	return names
}

// stringList reads a JSON array of strings, or one string.
func stringList(raw json.RawMessage) []string {
	var l []string
	if json.Unmarshal(raw, &l) == nil {
		return l
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && known(s) != "" {
		for _, p := range strings.Split(s, ",") {
			l = append(l, strings.TrimSpace(p))
		}
	}
	return l
}

// VerdictOf is the verdict rspamd's action and symbols give: a virus
// symbol (CLAM_VIRUS, ESET_VIRUS, ... but not a *_FAIL of the scanner)
// gives virus, a phishing symbol (PhishSymbol) phish, the spam actions
// (reject, add header, rewrite subject) spam, anything else ham.
func (r *Rspamd) VerdictOf() rules.Verdict {
	phish := false
	for _, s := range r.Symbols {
		u := strings.ToUpper(s)
		switch {
		case strings.Contains(u, "VIRUS") && !strings.HasSuffix(u, "_FAIL") && !strings.HasSuffix(u, "_ENCRYPTED"):
			return rules.Virus
		case PhishSymbol(u):
			phish = true
		}
	}
	if phish {
		return rules.Phish
	}
	switch r.Action {
	case "reject", "add header", "rewrite subject":
		return rules.Spam
	}
	return rules.Ham
}

// PhishSymbols are the phishing symbols rspamd ships (its phishing
// module, the Spamhaus DBL, Vade, and the composites of them) besides
// PHISHED_*: deploy/rspamd's exporter selects the same ones.
var PhishSymbols = []string{"PHISHING", "DBL_PHISH", "DBL_ABUSE_PHISH", "HACKED_WP_PHISHING", "PHISH_EMOTION", "VADE_PHISHING"}

// PhishSymbol reports whether an rspamd symbol (in upper case) says
// phishing: one of PhishSymbols, or PHISHED_* (PHISHED_OPENPHISH,
// PHISHED_PHISHTANK, PHISHED_GENERIC_SERVICE, ...) but not
// PHISHED_WHITELISTED, which says the opposite.
func PhishSymbol(u string) bool {
	if strings.HasPrefix(u, "PHISHED_") {
		return u != "PHISHED_WHITELISTED"
	}
	return slices.Contains(PhishSymbols, u)
}

// Refusal reasons of the rspamd and ARF endpoints.
const (
	ReasonNotRspamd     = "not_rspamd"
	ReasonNoAccount     = "no_local_account"
	ReasonNotARF        = "not_arf"
	ReasonOutOfScope    = "out_of_scope"
	ReasonBadAuthedUser = "user_not_an_address"
	ReasonSoftReject    = "soft_reject"
)

// RefusedError is a post that becomes no event.
type RefusedError struct{ Reason, Detail string }

func (e *RefusedError) Error() string { return e.Reason + ": " + e.Detail }

// Verdicts maps one rspamd scan to verdict events:
//
//   - an authenticated sender makes one outbound event against the
//     authenticated user, which must be an address (a login without a
//     domain is completed from the envelope sender when its local part is
//     the login);
//   - otherwise one inbound event against the envelope sender, which aupd
//     counts only when it is a local account (local-to-local mail): the
//     recipients of spam are never held responsible for it;
//
// the id is the same for every scan of the same message (Rspamd.id), time
// is now.
func (r *Rspamd) Verdicts(now time.Time) ([]*events.Verdict, error) {
	var msg *events.Message
	if len(r.Message) > 0 {
		msg = Sample(r.Message)
	} else {
		msg = &events.Message{}
	}
	if msg.MessageID == "" {
		msg.MessageID = oneLine(r.MessageID)
	}
	if r.MessageID == "" {
		// The default formatter's meta headers carry no Message-ID.
		r.MessageID = strings.Trim(msg.MessageID, "<>")
	}
	if msg.Subject == "" {
		msg.Subject = oneLine(r.Subject)
	}
	if msg.From == "" {
		msg.From = oneLine(r.From)
	}
	if len(msg.To) == 0 {
		for _, a := range r.Rcpt {
			if len(msg.To) < maxRecipients {
				msg.To = append(msg.To, oneLine(a))
			}
		}
	}
	verdict := r.VerdictOf()
	if verdict == rules.Ham && r.Action == "soft reject" {
		// Not accepted: the MTA tempfails it and its retry is scanned
		// again. It may be spam whose own post failed and was deferred
		// (defer = true answers "soft reject"): stored as ham, it would
		// take the id of its retry's spam verdict, which JetStream would
		// then drop as a duplicate.
		return nil, &RefusedError{ReasonSoftReject, "rspamd answered soft reject: the message was not accepted, and its retry is scanned again"}
	}
	if verdict == rules.Ham {
		// Ham is never evidence: the stream keeps its header fields, not
		// the message (the exporter's ham rule posts every outbound
		// message). Its id still hashes the body as posted.
		msg.Raw = ""
	}
	base := events.Verdict{Time: now.UTC(), Verdict: verdict, Score: r.Score, Source: "rspamd", Message: msg, Sender: r.sender()}
	if s := oneLine(r.Server); s != "" {
		base.Source = cutUTF8([]byte("rspamd@"+s), 128)
	}
	var accounts []string
	if r.User != "" {
		user := r.User
		if !strings.Contains(user, "@") {
			// A login without a domain (SASL user "alice"): the envelope
			// sender names the domain when its local part is the login.
			if l, d, ok := strings.Cut(r.From, "@"); ok && strings.EqualFold(l, user) && d != "" {
				user = r.From
			}
		}
		acct, err := events.NormalizeAccount(user)
		if err != nil {
			return nil, &RefusedError{ReasonBadAuthedUser, fmt.Sprintf("the authenticated user %q is not an address local@domain (%v)", oneLine(r.User), err)}
		}
		base.Direction = rules.Outbound
		accounts = []string{acct}
	} else {
		// Inbound: the verdict is about the sender, who is responsible for
		// the message, never about its recipients (else anyone could get a
		// local user suspended by sending them spam). aupd counts it only
		// when the sender is a local account (local-to-local mail) and
		// keeps it for statistics otherwise.
		base.Direction = rules.Inbound
		acct, err := events.NormalizeAccount(strings.Trim(strings.TrimSpace(r.From), "<>"))
		if err != nil {
			return nil, &RefusedError{ReasonNoAccount, "the sender did not authenticate and the envelope sender is not an address local@domain (a bounce has none)"}
		}
		accounts = []string{acct}
	}
	var out []*events.Verdict
	for _, acct := range accounts {
		v := base
		v.Account = acct
		v.ID = r.id(acct, msg.Subject)
		out = append(out, &v)
	}
	return out, nil
}

// sender is the client rspamd saw: its address, and the login for an
// authenticated sender; nil when it knows neither. An address that does
// not parse, or a login the contract would refuse, is left out rather
// than refuse the verdict.
func (r *Rspamd) sender() *events.Sender {
	var s events.Sender
	if ip, err := netip.ParseAddr(r.IP); err == nil && ip.Zone() == "" {
		s.IP = ip.Unmap().String()
	}
	if login := oneLine(r.User); login == r.User && len(login) <= events.MaxLogin {
		s.Login = login
	}
	if s == (events.Sender{}) {
		return nil
	}
	return &s
}

// id is the verdict's idempotency key. For the same message it is the
// same on every scan, so that a message the MTA retries (each attempt
// with a new queue id, and with new trace headers) counts once; and it
// differs between messages that share a Message-ID but not their
// recipients or content, so that a sender who reuses one Message-ID still
// counts once per message. It hashes:
//
//   - the account, the envelope sender and the envelope recipients
//     (lower case, sorted, without repeats);
//   - the Message-ID and the Subject;
//   - the start of the body (after the header; its first idBodyBytes
//     bytes as posted), which the MTA's retries do not change while they
//     do change the header (Received, the queue id).
//
// A message without a Message-ID cannot be told from a new copy of it,
// so its id adds the queue id: each delivery attempt counts, as it did
// before (MTAs give submitted mail a Message-ID, so this is mail from
// outside, or a sender that omits one). Without a queue id either, the
// content alone decides.
func (r *Rspamd) id(account, subject string) string {
	h := sha256.New()
	field := func(s string) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	field("rspamd-v2")
	field(account)
	field(strings.ToLower(strings.Trim(strings.TrimSpace(r.From), "<>")))
	rcpt := make([]string, 0, len(r.Rcpt))
	for _, a := range r.Rcpt {
		rcpt = append(rcpt, strings.ToLower(strings.Trim(strings.TrimSpace(a), "<>")))
	}
	slices.Sort(rcpt)
	for _, a := range slices.Compact(rcpt) {
		field(a)
	}
	field("")
	field(strings.Trim(strings.TrimSpace(r.MessageID), "<>"))
	if r.MessageID == "" {
		field(r.QueueID)
	}
	field(subject)
	h.Write(bodyStart(r.Message))
	return "rspamd-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// idBodyBytes is how much of the body the id hashes.
const idBodyBytes = 64 << 10

// bodyStart is the start of a message's body: what follows the first
// empty line (the whole text when it has none), at most idBodyBytes.
func bodyStart(raw []byte) []byte {
	body := raw
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		body = raw[i+4:]
	} else if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		body = raw[i+2:]
	}
	return body[:min(len(body), idBodyBytes)]
}
