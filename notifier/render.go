package notifier

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"

	gomail "github.com/wneessen/go-mail"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

//go:embed templates/*.tmpl
var builtinTemplates embed.FS

// Names and values of the headers that mark a notice.
const (
	// NoticeHeader is set to NoticeHeaderValue on every AUP notice, so the
	// abuse team's mail rules can recognise it without parsing the subject.
	NoticeHeader      = "X-Aupd-Notice"
	NoticeHeaderValue = "aup-suspension"
	// EvidenceName is the file name of the evidence attachment.
	EvidenceName = "evidence.txt"
)

// Size limits of rendered text.
const (
	maxSubject   = 200 // characters of the subject after the tag
	maxLine      = 500 // characters of a one-line field taken from an event
	maxBody      = 64 << 10
	maxTemplates = 64 << 10
)

// NoticeData is what the subject and body templates see. Every string in
// it has been cleaned: valid UTF-8, no control or bidi characters, no line
// breaks.
type NoticeData struct {
	Account      string    // the suspended mailbox, local@domain
	Company      string    // the owning company's id
	CompanyName  string    // its name, or the id when the name is unknown
	ProviderName string    // Config.ProviderName
	Services     []string  // the suspended services: send, webmail_send
	SuspendedAt  time.Time // when the suspension was recorded (UTC)
	SuspensionID string
	EventID      string
	Threshold    int
	Count        int  // messages counted in the window
	Capped       bool // Count is a lower bound
	Outbound     int
	Inbound      int
	Complaints   int
	WindowStart  time.Time // the 24-hour window (UTC)
	WindowEnd    time.Time
	// SamplesReferenced is how many samples the suspension names;
	// SamplesAttached how many of them are in evidence.txt.
	SamplesReferenced int
	SamplesAttached   int
	ReinstateURL      string // POST target of the reinstate API call, a full URL
	ReinstateJSON     string // an example body for it
	// DeskURL is the signed link to the account's page on the abuse desk
	// (empty when the desk has no public URL); DeskExpires is when the
	// link stops working.
	DeskURL     string
	DeskExpires time.Time
	// Rule is the AUP rule crossed: "volume:<name>" for a volume limit,
	// "spam_rate" for the spam rate, empty for the spam count.
	Rule string
	// Volume describes a volume limit's crossing; nil for the spam rules.
	Volume *VolumeData
	// Rate describes a spam-rate crossing (rule spam_rate); nil otherwise.
	Rate *RateData
}

// VolumeData is what a notice says about a volume limit's crossing.
type VolumeData struct {
	// Sent is the volume in words: "37 messages to 2,001 recipients",
	// "mail to 2,001 recipients", "51 messages".
	Sent string
	// Limit is the limit in words: "2,000 recipients in any 24 hours".
	Limit string
	// Since is when the burst started (UTC).
	Since time.Time
	// Clients are the client addresses the mailbox sent from, the most
	// recent first (an IPv6 network by its /64); may be empty.
	Clients []string
}

// LinkFunc makes the signed desk link of one suspension, at now; ok is
// false when there is no desk to link to.
type LinkFunc func(account, suspensionID string, now time.Time) (url string, expires time.Time, ok bool)

// templateFuncs are the functions the templates may use.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"datetime": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"describe": describeService,
		"join":     strings.Join,
		"sentence": sentenceCase,
	}
}

// sentenceCase starts s with a capital letter, for a name that begins a
// line ("your mail provider" in the signature).
func sentenceCase(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}

func describeService(s string) string {
	switch rules.Service(s) {
	case rules.ServiceSend:
		return "sending mail over SMTP (mail programs, phones, devices)"
	case rules.ServiceWebmailSend:
		return "sending mail from webmail"
	case rules.ServiceReceive:
		return "receiving mail"
	case rules.ServiceIMAP:
		return "IMAP access"
	case rules.ServicePOP3:
		return "POP3 access"
	case rules.ServiceWebmail:
		return "webmail login"
	}
	return s
}

type templates struct {
	subject, body *template.Template
}

// loadTemplates parses the configured templates, or the built-in ones,
// and executes them once on sample data so that a template that refers to
// a missing field fails at check-config rather than at the first
// suspension.
func loadTemplates(cfg TemplatesConfig) (*templates, error) {
	read := func(path, builtin string) (string, error) {
		if path == "" {
			b, err := builtinTemplates.ReadFile("templates/" + builtin)
			return string(b), err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		if len(b) > maxTemplates {
			return "", fmt.Errorf("%s is larger than %d bytes", path, maxTemplates)
		}
		if !utf8.Valid(b) {
			return "", fmt.Errorf("%s is not UTF-8", path)
		}
		return string(b), nil
	}
	var t templates
	for _, x := range []struct {
		dst           **template.Template
		name, path, b string
	}{
		{&t.subject, "subject", cfg.Subject, "subject.tmpl"},
		{&t.body, "body", cfg.Body, "body.tmpl"},
	} {
		text, err := read(x.path, x.b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", x.name, err)
		}
		tpl, err := template.New(x.name).Funcs(templateFuncs()).Option("missingkey=error").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", x.name, err)
		}
		for _, d := range []NoticeData{exampleData(), exampleVolumeData()} {
			if err := tpl.Execute(&bytes.Buffer{}, d); err != nil {
				return nil, fmt.Errorf("%s: %w", x.name, err)
			}
		}
		*x.dst = tpl
	}
	return &t, nil
}

// exampleVolumeData is exampleData for a volume limit's crossing.
func exampleVolumeData() NoticeData {
	d := exampleData()
	d.Rule = "volume:daily"
	d.SamplesReferenced, d.SamplesAttached = 0, 0
	d.Volume = &VolumeData{Sent: "37 messages to 2,001 recipients", Limit: "2,000 recipients in any 24 hours",
		Since: d.SuspendedAt.Add(-2 * time.Hour), Clients: []string{"192.0.2.1", "2001:db8:1:2::/64"}}
	return d
}

func exampleData() NoticeData {
	at := time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)
	return NoticeData{
		Account: "alice@example.com", Company: "example", CompanyName: "Example Ltd",
		ProviderName: "Provider", Services: []string{"send", "webmail_send"},
		SuspendedAt: at, SuspensionID: "s1", EventID: "e1", Threshold: 10, Count: 11,
		Outbound: 9, Inbound: 1, Complaints: 1, WindowStart: at.Add(-24 * time.Hour), WindowEnd: at,
		SamplesReferenced: 3, SamplesAttached: 3,
		ReinstateURL:  "https://aupd.example/api/v1/accounts/alice@example.com/reinstate",
		ReinstateJSON: `{"services":["send","webmail_send"],"reason":"..."}`,
		DeskURL:       "https://aupd.example/desk/l/x", DeskExpires: at.Add(7 * 24 * time.Hour),
	}
}

// Company is what the notifier needs to know about the company that owns
// a mailbox.
type Company struct {
	Name         string
	AbuseContact string // an email address; empty means the fallback
}

// notice is everything that goes into one rendered notice.
type notice struct {
	event     *events.AccountEvent
	company   Company
	companyOK bool
	samples   []*events.Verdict // the samples to show, from pickSamples
	fetched   int               // how many of the referenced samples were found
	now       time.Time
	messageID string // without angle brackets
	boundary  string
	deskURL   string // the signed desk link, if any
	deskUntil time.Time
}

// rendered is a notice ready to send: the whole message and its parts.
type rendered struct {
	recipient string // envelope recipient, addr-spec; "" when it must not be sent
	reason    string // why the fallback was used, or it is not sent; "" for the company's contact
	sender    string // envelope sender, addr-spec
	messageID string
	subject   string
	message   []byte
	evidence  []byte
}

// renderer turns events into messages. It holds no mutable state.
type renderer struct {
	cfg       Config
	tpl       *templates
	from      *mail.Address
	replyTo   *mail.Address
	fallback  *mail.Address
	midDomain string
}

func newRenderer(cfg Config) (*renderer, error) {
	tpl, err := loadTemplates(cfg.Templates)
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	from, err := parseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	fallback, err := parseAddress(cfg.FallbackAbuseContact)
	if err != nil {
		return nil, fmt.Errorf("fallback_abuse_contact: %w", err)
	}
	r := &renderer{cfg: cfg, tpl: tpl, from: from, fallback: fallback, midDomain: cfg.MessageIDDomain}
	if cfg.ReplyTo != "" {
		if r.replyTo, err = parseAddress(cfg.ReplyTo); err != nil {
			return nil, fmt.Errorf("reply_to: %w", err)
		}
	}
	if r.midDomain == "" {
		r.midDomain = domainOf(from.Address)
	}
	return r, nil
}

// Why a notice did not go to the company's abuse contact, as recorded in
// Delivery.RecipientReason. The values are bounded: they are also the
// label of aupd_notice_redirects_total.
const (
	ReasonCompanyUnknown   = "company_unknown"    // the mailbox's company is not known
	ReasonNoContact        = "no_contact"         // the company has no abuse contact
	ReasonUnusableContact  = "unusable_contact"   // the company's abuse contact is not a usable address
	ReasonContactIsAccount = "contact_is_account" // the company's abuse contact is the suspended mailbox
	// ReasonFallbackIsAccount: the notice would have gone to the fallback
	// contact, which is the suspended mailbox itself; it was not sent.
	ReasonFallbackIsAccount = "fallback_is_account"
)

var recipientReasons = []string{ReasonCompanyUnknown, ReasonNoContact, ReasonUnusableContact, ReasonContactIsAccount, ReasonFallbackIsAccount}

// RecipientNote says in one sentence where a notice went and why, for a
// Delivery.RecipientReason; "" for "" (the company's abuse contact).
func RecipientNote(reason string) string {
	const fb = "notice sent to the provider's fallback contact because "
	switch reason {
	case "":
		return ""
	case ReasonCompanyUnknown:
		return fb + "the mailbox's company is unknown"
	case ReasonNoContact:
		return fb + "the company has no abuse contact"
	case ReasonUnusableContact:
		return fb + "the company's abuse contact is not a usable address"
	case ReasonContactIsAccount:
		return fb + "the company's abuse contact is this mailbox"
	case ReasonFallbackIsAccount:
		return "notice not sent: the provider's fallback contact is this mailbox, and a notice never goes to the mailbox it is about (whoever took it over would read the reinstate link); forward the evidence to the account's owner another way"
	}
	return "notice recipient: " + reason
}

// SameMailbox reports whether the address contact reaches the mailbox
// account: the same address ignoring case, also when either names a
// +tag extension of the other's mailbox (abuse+x@acme.example reaches
// abuse@acme.example). A display name in contact is allowed.
func SameMailbox(contact, account string) bool {
	if a, err := mail.ParseAddress(contact); err == nil {
		contact = a.Address
	}
	c, ok1 := mailboxBase(contact)
	a, ok2 := mailboxBase(account)
	return ok1 && ok2 && c == a
}

// mailboxBase is an address in lower case without its +tag extension
// and without a trailing dot on the domain.
func mailboxBase(addr string) (string, bool) {
	addr = strings.ToLower(strings.TrimSpace(addr))
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", false
	}
	local, domain := addr[:at], strings.TrimSuffix(addr[at+1:], ".")
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	return local + "@" + domain, true
}

// recipient picks the company's abuse contact, or the fallback when the
// company has none or an unusable one, or when the contact is the
// suspended account itself: a notice never goes to the mailbox it is
// about, whose reader may be whoever stole its password. The second
// result says why the fallback was used ("" when it was not). When the
// fallback is the account as well, the address is nil and the reason
// ReasonFallbackIsAccount: the notice must not be sent.
func (r *renderer) recipient(c Company, ok bool, account string) (*mail.Address, string) {
	why := ""
	switch {
	case !ok:
		why = ReasonCompanyUnknown
	case strings.TrimSpace(c.AbuseContact) == "":
		why = ReasonNoContact
	default:
		a, err := parseAddress(c.AbuseContact)
		switch {
		case err != nil:
			why = ReasonUnusableContact
		case SameMailbox(a.Address, account):
			why = ReasonContactIsAccount
		default:
			return a, ""
		}
	}
	if SameMailbox(r.fallback.Address, account) {
		return nil, ReasonFallbackIsAccount
	}
	return r.fallback, why
}

// newMessageID returns the Message-ID (without brackets) of a suspension's
// notice. It is derived from the account and the suspension id alone, so
// that a notice rendered again (its stored copy lost with a failed Redis
// master, say) carries the same Message-ID as the one already sent, and
// the recipient's mail system, or anyone counting, sees one message.
// Suspension ids are unique (time-ordered and random).
func (r *renderer) newMessageID(ev *events.AccountEvent, _ time.Time) string {
	h := sha256.Sum256([]byte(ev.Account + "\x00" + ev.Suspension.ID))
	return "aup." + hex.EncodeToString(h[:16]) + "@" + r.midDomain
}

func newBoundary() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return "aupd-" + hex.EncodeToString(b[:])
}

// errRender marks a notice that cannot be rendered; retrying would not help.
var errRender = errors.New("render notice")

// render builds the notice. It is deterministic given n (the Message-ID,
// boundary and time are inputs), which the golden tests rely on.
func (r *renderer) render(n notice) (*rendered, error) {
	rcpt, why := r.recipient(n.company, n.companyOK, n.event.Account)
	data := r.data(n)
	evidence := r.evidence(n, data)

	var subj bytes.Buffer
	if err := r.tpl.subject.Execute(&subj, data); err != nil {
		return nil, fmt.Errorf("%w: subject template: %w", errRender, err)
	}
	subject := cleanLine(subj.String(), maxSubject)
	if tag := r.cfg.SubjectTag; tag != "" {
		subject = tag + " " + subject
	}
	var body bytes.Buffer
	if err := r.tpl.body.Execute(&body, data); err != nil {
		return nil, fmt.Errorf("%w: body template: %w", errRender, err)
	}
	bodyText := cleanText(body.String(), maxBody)

	boundary := n.boundary
	for boundary == "" || strings.Contains(bodyText, boundary) || bytes.Contains(evidence, []byte(boundary)) {
		boundary = newBoundary()
	}
	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent(), gomail.WithBoundary(boundary),
		gomail.WithCharset(gomail.CharsetUTF8), gomail.WithEncoding(gomail.EncodingQP))
	m.FromMailAddress(r.from)
	if rcpt != nil {
		m.ToMailAddress(rcpt)
	} else {
		// Never sent (ReasonFallbackIsAccount); rendered for the record.
		m.SetGenHeader("To", "undisclosed-recipients:;")
	}
	if r.replyTo != nil {
		m.ReplyToMailAddress(r.replyTo)
	}
	m.Subject(subject)
	m.SetMessageIDWithValue(n.messageID)
	m.SetDateWithValue(n.now)
	m.SetGenHeader("Auto-Submitted", "auto-generated")
	m.SetGenHeader("X-Auto-Response-Suppress", "All")
	m.SetGenHeader(NoticeHeader, NoticeHeaderValue)
	m.SetUserAgent("aupd")
	m.SetBodyString(gomail.TypeTextPlain, bodyText)
	if err := m.AttachReader(EvidenceName, bytes.NewReader(evidence),
		gomail.WithFileContentType("text/plain; charset=utf-8")); err != nil {
		return nil, fmt.Errorf("%w: attach evidence: %w", errRender, err)
	}
	var out bytes.Buffer
	if _, err := m.WriteTo(&out); err != nil {
		return nil, fmt.Errorf("%w: write message: %w", errRender, err)
	}
	out2 := &rendered{
		reason:    why,
		sender:    r.from.Address,
		messageID: "<" + n.messageID + ">",
		subject:   subject,
		message:   out.Bytes(),
		evidence:  evidence,
	}
	if rcpt != nil {
		out2.recipient = rcpt.Address
	}
	return out2, nil
}

// data builds the template data from the event, cleaning every field.
func (r *renderer) data(n notice) NoticeData {
	ev, s := n.event, n.event.Suspension
	d := NoticeData{
		Account:           cleanLine(ev.Account, events.MaxAccount),
		Company:           cleanLine(ev.Company, 200),
		ProviderName:      r.cfg.ProviderName,
		SuspensionID:      cleanLine(s.ID, 200),
		EventID:           cleanLine(ev.ID, 200),
		Threshold:         s.Threshold,
		Count:             s.Count,
		Capped:            s.Capped,
		Outbound:          s.Counts[string(rules.Outbound)],
		Inbound:           s.Counts[string(rules.Inbound)],
		Complaints:        s.Counts[string(rules.Complaint)],
		SamplesReferenced: len(s.Samples),
		SamplesAttached:   len(n.samples),
	}
	d.CompanyName = d.Company
	if n.companyOK && strings.TrimSpace(n.company.Name) != "" {
		d.CompanyName = cleanLine(n.company.Name, 200)
	}
	if d.CompanyName == "" {
		d.CompanyName = "your company"
	}
	d.SuspendedAt = ev.Time.UTC()
	if d.SuspendedAt.IsZero() {
		d.SuspendedAt = n.now.UTC()
	}
	d.WindowEnd, d.WindowStart = s.WindowEnd.UTC(), s.WindowStart.UTC()
	if d.WindowEnd.IsZero() {
		d.WindowEnd = d.SuspendedAt
	}
	if d.WindowStart.IsZero() {
		d.WindowStart = d.WindowEnd.Add(-24 * time.Hour)
	}
	for _, svc := range s.Services {
		if rules.Service(svc).Valid() {
			d.Services = append(d.Services, svc)
		}
	}
	if len(d.Services) == 0 {
		for _, svc := range rules.AUPServices {
			d.Services = append(d.Services, string(svc))
		}
	}
	if r := s.Rate; r != nil && s.Rule == rules.RuleSpamRate {
		d.Rule, d.Rate = rules.RuleSpamRate, rateData(r)
	}
	if v := s.Volume; v != nil {
		d.Rule, d.Volume = cleanLine(cmp.Or(s.Rule, rules.VolumeRulePrefix+v.Limit), 80), volumeData(v, s.Threshold)
		d.WindowStart = d.WindowEnd.Add(-time.Duration(v.WindowSeconds) * time.Second)
	}
	base := strings.TrimRight(r.cfg.APIURL, "/")
	if base == "" {
		base = "https://<aupd server>"
	}
	d.ReinstateURL = base + "/api/v1/accounts/" + url.PathEscape(d.Account) + "/reinstate"
	d.DeskURL, d.DeskExpires = n.deskURL, n.deskUntil.UTC()
	body, _ := json.Marshal(struct {
		Services []string `json:"services"`
		Reason   string   `json:"reason"`
	}{d.Services, "password changed, devices checked"})
	d.ReinstateJSON = string(body)
	return d
}

// cleanLine makes s safe for one line of a header or of evidence.txt:
// valid UTF-8, control, format (bidi) and line-separator characters
// replaced by a space, runs of white space collapsed, at most max
// characters (cut with "...").
func cleanLine(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space, n := false, 0
	for _, r := range s {
		if unsafeRune(r) || unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if n >= max {
			b.WriteString("...")
			break
		}
		if space {
			b.WriteByte(' ')
			n++
			space = false
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// cleanText makes s safe as the text of a body: valid UTF-8, LF line
// ends, no control characters but tab and LF, no bidi overrides, at most
// max bytes.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("\n[... cut ...]\n")
			break
		}
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case unsafeRune(r):
			b.WriteRune(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// unsafeRune reports characters that must not reach a header or a reader
// unescaped: C0/C1 controls, DEL, line and paragraph separators, and the
// bidi embedding, override and isolate marks that can disguise text.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
		return true
	case r == 0x2028, r == 0x2029, r >= 0x200e && r <= 0x200f,
		r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0xfeff:
		return true
	}
	return false
}
