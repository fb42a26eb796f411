package notifier

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/mail"
	"strconv"
	"text/template"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// DigestHeaderValue marks a daily digest in NoticeHeader.
const DigestHeaderValue = "aup-digest"

// Digest is the daily summary for one company's abuse contact: its
// accounts suspended now, those near their threshold, and the
// reinstatements of the day. Every text in it comes from aupd's own
// records; it is cleaned all the same.
type Digest struct {
	CompanyID string
	Company   Company
	Day       time.Time // end of the period covered (UTC)
	Suspended []DigestAccount
	Near      []DigestAccount
	// NearUnavailable says the near-threshold list could not be made.
	NearUnavailable bool
	Reinstated      []DigestAccount
	// Cut says a list was cut at the configured maximum.
	Cut bool
	// DeskURL links the abuse desk; "" leaves the link out.
	DeskURL string
}

// DigestAccount is one line of a digest.
type DigestAccount struct {
	Account   string
	Services  []string
	Reason    string
	Actor     string
	Note      string
	At        time.Time
	Count     int
	Threshold int
}

// Empty reports whether the digest has nothing to say.
func (d Digest) Empty() bool {
	return len(d.Suspended) == 0 && len(d.Near) == 0 && len(d.Reinstated) == 0
}

var digestTemplate = template.Must(template.New("digest").Funcs(templateFuncs()).Parse(`Daily AUP digest for {{.CompanyName}}, {{datetime .Day}}
from {{.ProviderName}}.

Accounts suspended now: {{len .Suspended}}
{{- range .Suspended}}
  - {{.Account}}: {{join .Services ", "}} suspended since {{datetime .At}} ({{.Reason}}{{if .Actor}}, by {{.Actor}}{{end}})
{{- end}}

Accounts near their threshold: {{if .NearUnavailable}}not available{{else}}{{len .Near}}{{end}}
{{- range .Near}}
  - {{.Account}}: {{.Count}} of {{.Threshold}} in the window
{{- end}}

Reinstated in the last 24 hours: {{len .Reinstated}}
{{- range .Reinstated}}
  - {{.Account}}: {{join .Services ", "}} at {{datetime .At}}{{if .Actor}} by {{.Actor}}{{end}}{{if .Note}}: {{.Note}}{{end}}
{{- end}}
{{if .Cut}}
Some lists were cut; the admin API lists every account.
{{end}}{{if .DeskURL}}
Abuse desk: {{.DeskURL}}
{{end}}
This digest is sent once a day by aupd. Reply to reach the abuse desk.
`))

// SendDigest renders a digest and sends it to the company's abuse
// contact through the notifier's transport (SMTP, or an .eml file). A
// company without a usable abuse contact of its own gets none: the
// fallback contact is for notices, not for every company's digest.
func (n *Notifier) SendDigest(ctx context.Context, d Digest) error {
	rcpt, why := n.r.recipient(d.Company, true, "")
	if why != "" {
		return fmt.Errorf("digest for %s: %s", d.CompanyID, why)
	}
	clean := func(list []DigestAccount) []DigestAccount {
		out := make([]DigestAccount, len(list))
		for i, a := range list {
			a.Account = cleanLine(a.Account, 320)
			a.Reason = cleanLine(a.Reason, 64)
			a.Actor = cleanLine(a.Actor, 64)
			a.Note = cleanLine(a.Note, 300)
			svcs := make([]string, len(a.Services))
			for j, s := range a.Services {
				svcs[j] = cleanLine(s, 32)
			}
			a.Services = svcs
			out[i] = a
		}
		return out
	}
	name := cleanLine(d.Company.Name, 200)
	if name == "" {
		name = cleanLine(d.CompanyID, 200)
	}
	data := map[string]any{
		"CompanyName": name, "ProviderName": n.cfg.ProviderName, "Day": d.Day,
		"Suspended": clean(d.Suspended), "Near": clean(d.Near), "NearUnavailable": d.NearUnavailable,
		"Reinstated": clean(d.Reinstated), "Cut": d.Cut, "DeskURL": cleanLine(d.DeskURL, 500),
	}
	var body bytes.Buffer
	if err := digestTemplate.Execute(&body, data); err != nil {
		return fmt.Errorf("render digest: %w", err)
	}
	subject := fmt.Sprintf("Daily digest for %s: %d suspended, %d reinstated", name, len(d.Suspended), len(d.Reinstated))
	if tag := n.cfg.SubjectTag; tag != "" {
		subject = tag + " " + subject
	}
	if err := n.sendPlain(ctx, rcpt, subject, body.String(), DigestHeaderValue, "aup-digest"); err != nil {
		return fmt.Errorf("digest for %s: %w", d.CompanyID, err)
	}
	return nil
}

// Values of NoticeHeader on the other mail aupd sends.
const (
	// SignInHeaderValue marks the abuse desk's sign-in link mail.
	SignInHeaderValue = "aup-desk-sign-in"
)

// SendText sends a plain-text message of aupd's own (not a notice: no
// evidence, no retries) to one address through the notifier's transport
// (SMTP, or an .eml file), with the notifier's From and Reply-To. kind is
// the value of the X-Aupd-Notice header (SignInHeaderValue, ...), so that
// mail rules can tell it apart. The subject and body are cleaned of
// control characters.
func (n *Notifier) SendText(ctx context.Context, to, subject, body, kind string) error {
	rcpt, err := parseAddress(to)
	if err != nil {
		return fmt.Errorf("send to %q: %w", cleanLine(to, 320), err)
	}
	return n.sendPlain(ctx, rcpt, subject, body, cleanLine(kind, 64), fileSafe(cleanLine(kind, 32)))
}

// sendPlain builds and sends one text/plain message; the Message-ID
// starts with midPrefix.
func (n *Notifier) sendPlain(ctx context.Context, rcpt *mail.Address, subject, body, kind, midPrefix string) error {
	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent(), gomail.WithCharset(gomail.CharsetUTF8), gomail.WithEncoding(gomail.EncodingQP))
	m.FromMailAddress(n.r.from)
	m.ToMailAddress(rcpt)
	if n.r.replyTo != nil {
		m.ReplyToMailAddress(n.r.replyTo)
	}
	m.Subject(cleanLine(subject, maxSubject))
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	m.SetMessageIDWithValue(fmt.Sprintf("%s.%s.%s@%s", midPrefix, strconv.FormatInt(n.now().Unix(), 36), hex.EncodeToString(rnd[:]), n.r.midDomain))
	m.SetDateWithValue(n.now())
	m.SetGenHeader("Auto-Submitted", "auto-generated")
	m.SetGenHeader("X-Auto-Response-Suppress", "All")
	m.SetGenHeader(NoticeHeader, kind)
	m.SetUserAgent("aupd")
	m.SetBodyString(gomail.TypeTextPlain, cleanText(body, maxBody))
	var out bytes.Buffer
	if _, err := m.WriteTo(&out); err != nil {
		return fmt.Errorf("write message: %w", err)
	}
	if _, err := n.tr.send(ctx, n.r.from.Address, rcpt.Address, out.Bytes(), nil); err != nil {
		return fmt.Errorf("send to %s: %w", rcpt.Address, err)
	}
	return nil
}
