package desk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"text/template"
	"time"

	"github.com/aupd/aupd/notifier"
)

// Sign-in links are asked for on the sign-in page and mailed by a few
// senders that Run starts: the page answers at once, the same way whatever
// the address, and the lookup and the mail happen afterwards, so that
// neither the answer nor its timing tells whether an address may sign in.
// The queue is bounded: when it is full, an ask is dropped (and counted).
const (
	mailQueue   = 64
	mailSenders = 2
	// mailTimeout bounds one mail (the SMTP client has its own timeouts
	// per command as well).
	mailTimeout = 2 * time.Minute
	// maxLinksPerMail bounds the companies one mail has a link for.
	maxLinksPerMail = 20
)

// Results of aupd_desk_sign_in_links_total.
const (
	linkSent    = "sent"
	linkUnknown = "unknown"
	linkLimited = "limited"
	linkDropped = "dropped"
	linkFailed  = "failed"
)

var linkResults = []string{linkSent, linkUnknown, linkLimited, linkDropped, linkFailed}

// linkRequest is one sign-in link asked for.
type linkRequest struct {
	addr   string // normalized
	client string // the asking client's address
	next   string
	at     time.Time
}

// mailsLinks reports whether this desk mails sign-in links.
func (d *Desk) mailsLinks() bool { return d.links != nil && d.opts.Mailer != nil && d.cfg.Enabled }

// enqueue hands an ask to the senders; it never blocks.
func (d *Desk) enqueue(req linkRequest) {
	select {
	case d.mails <- req:
	default:
		d.linkMails.WithLabelValues(linkDropped).Inc()
		d.log.Warn("sign-in link not sent: too many asked for at once", "client", req.client)
	}
}

// Run sends the sign-in links asked for, and sweeps the sessions (at
// start and every minute), until ctx ends. It then finishes the mail in
// hand and drops the asks still queued.
func (d *Desk) Run(ctx context.Context) error {
	if err := d.Sweep(ctx); err != nil && ctx.Err() == nil {
		d.log.Warn("sweep desk sessions", "err", err)
	}
	var wg sync.WaitGroup
	for range mailSenders {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case req := <-d.mails:
					mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mailTimeout)
					d.mailLink(mctx, req)
					cancel()
				}
			}
		})
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			if err := d.Sweep(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("sweep desk sessions", "err", err)
			}
		}
	}
	wg.Wait()
	if n := len(d.mails); n > 0 {
		d.linkMails.WithLabelValues(linkDropped).Add(float64(n))
		d.log.Warn("sign-in links not sent: aupd is stopping", "asked", n)
	}
	return nil
}

// mailLink counts the ask against the address's limit, finds the
// companies the address may sign in for and mails one link for each. The
// link is never logged.
func (d *Desk) mailLink(ctx context.Context, req linkRequest) {
	sum := sha256.Sum256([]byte(req.addr))
	err := d.limit(ctx, d.prefix+":desk:signin-mail:"+hex.EncodeToString(sum[:]), d.cfg.SignInMails, d.cfg.SignInMailWindow)
	var lim *errLimited
	switch {
	case errors.As(err, &lim):
		d.linkMails.WithLabelValues(linkLimited).Inc()
		d.log.Info("sign-in link not sent: too many for this address", "address", req.addr, "client", req.client)
		return
	case err != nil:
		d.linkMails.WithLabelValues(linkFailed).Inc()
		d.log.Warn("sign-in link not sent", "address", req.addr, "err", err)
		return
	}
	cos := d.dir.SignInCompanies(req.addr)
	if len(cos) == 0 {
		d.linkMails.WithLabelValues(linkUnknown).Inc()
		d.log.Info("sign-in link asked for an address that is no company's contact; nothing sent", "address", req.addr, "client", req.client)
		return
	}
	if len(cos) > maxLinksPerMail {
		cos = cos[:maxLinksPerMail]
	}
	data := linkMail{Address: req.addr, Client: req.client, Asked: req.at, Minutes: int(d.cfg.SignInLinkTTL / time.Minute)}
	var ids []string
	for _, c := range cos {
		tok, exp := d.links.SignIn(req.addr, c.ID, req.next, req.at)
		name := c.Name
		if name == "" {
			name = c.ID
		}
		data.Links = append(data.Links, mailLinkLine{Company: name, URL: d.links.SignInURL(tok)})
		data.Expires = exp
		ids = append(ids, c.ID)
	}
	var body bytes.Buffer
	if err := linkMailTemplate.Execute(&body, data); err != nil {
		d.linkMails.WithLabelValues(linkFailed).Inc()
		d.log.Error("render sign-in link mail", "err", err)
		return
	}
	if err := d.opts.Mailer.SendText(ctx, req.addr, "Your sign-in link for the abuse desk", body.String(), notifier.SignInHeaderValue); err != nil {
		d.linkMails.WithLabelValues(linkFailed).Inc()
		d.log.Warn("sign-in link not delivered", "address", req.addr, "companies", ids, "err", err)
		return
	}
	d.linkMails.WithLabelValues(linkSent).Inc()
	d.log.Info("sign-in link mailed", "address", req.addr, "companies", ids, "client", req.client)
}

type linkMail struct {
	Address string
	Client  string
	Asked   time.Time
	Expires time.Time
	Minutes int
	Links   []mailLinkLine
}

type mailLinkLine struct{ Company, URL string }

var linkMailTemplate = template.Must(template.New("mail").Funcs(template.FuncMap{
	"utc": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
}).Parse(`Hello,

someone asked to sign in to the abuse desk as {{.Address}}.
{{- if eq (len .Links) 1}}{{with index .Links 0}}
To sign in for {{.Company}}, open this link and press "Sign in":

  {{.URL}}
{{end}}{{else}}
Open the link of the company you want to sign in for and press "Sign in":
{{range .Links}}
  {{.Company}}:
  {{.URL}}
{{end}}{{end}}
The link works once and expires at {{utc .Expires}}, {{.Minutes}} minutes
after it was asked for. Whoever has the link can sign in with it, so do not
pass it on.

It was asked for at {{utc .Asked}} from the address {{.Client}}.

If you did not ask for it, ignore this message: nothing happens unless the
link is opened and "Sign in" pressed.

-- 
aupd abuse desk
`))
