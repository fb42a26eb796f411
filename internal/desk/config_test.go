package desk

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	key := Secret(strings.Repeat("k", MinKeyLength))
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // "" valid
	}{
		{"defaults: off", func(*Config) {}, ""},
		{"enabled, no links", func(c *Config) { c.Enabled = true }, ""},
		{"links", func(c *Config) { c.Enabled, c.PublicURL, c.LinkKey = true, "https://aupd.example/desk", key }, ""},
		{"links without key", func(c *Config) { c.Enabled, c.PublicURL = true, "https://aupd.example/desk" }, "link_key: public_url needs"},
		{"short key", func(c *Config) { c.LinkKey = key[:10] }, "link_key: shorter than"},
		{"links while off", func(c *Config) { c.PublicURL, c.LinkKey = "https://aupd.example/desk", key }, "not enabled"},
		{"not a URL", func(c *Config) { c.Enabled, c.PublicURL, c.LinkKey = true, "aupd.example/desk", key }, "not an http(s) URL"},
		{"query", func(c *Config) { c.Enabled, c.PublicURL, c.LinkKey = true, "https://aupd.example/desk?x=1", key }, "no query"},
		{"no desk path", func(c *Config) { c.Enabled, c.PublicURL, c.LinkKey = true, "http://aupd.example:9390", key }, "must end in /desk"},
		{"another path", func(c *Config) { c.Enabled, c.PublicURL, c.LinkKey = true, "https://aupd.example/abuse", key }, "must end in /desk"},
		{"link ttl", func(c *Config) { c.LinkTTL = time.Minute }, "link_ttl"},
		{"session ttl", func(c *Config) { c.SessionTTL = 30 * 24 * time.Hour }, "session_ttl"},
		{"attempts", func(c *Config) { c.SignInAttempts = 0 }, "sign_in_attempts"},
		{"sign-in link ttl", func(c *Config) { c.SignInLinkTTL = 30 * time.Second }, "sign_in_link_ttl"},
		{"sign-in link ttl too long", func(c *Config) { c.SignInLinkTTL = 48 * time.Hour }, "sign_in_link_ttl"},
		{"sign-in mails", func(c *Config) { c.SignInMails = 0 }, "sign_in_mails"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one with %q", err, tc.want)
			}
		})
	}
	if Defaults().Enabled {
		t.Error("the desk is on by default")
	}
	on := Defaults()
	on.Enabled = true
	if on.MailsSignInLinks() || len(on.Notes()) != 1 || !strings.Contains(on.Notes()[0], "API tokens only") {
		t.Errorf("a desk without links: mails %v, notes %q", on.MailsSignInLinks(), on.Notes())
	}
	on.PublicURL, on.LinkKey = "https://aupd.example/desk", key
	if !on.MailsSignInLinks() || len(on.Notes()) != 0 {
		t.Errorf("a desk with links: mails %v, notes %q", on.MailsSignInLinks(), on.Notes())
	}
	if off := Defaults(); len(off.Notes()) != 0 {
		t.Errorf("a desk that is off: notes %q", off.Notes())
	}
}

func testLinks() *Links {
	return NewLinks(Config{Enabled: true, PublicURL: "https://aupd.example/desk/", LinkKey: Secret(strings.Repeat("k", 40)), LinkTTL: 7 * 24 * time.Hour})
}

func TestLinkRoundTrip(t *testing.T) {
	l := testLinks()
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	u, exp, ok := l.URL("a|b@example.com", "sus-1", now)
	if !ok || !strings.HasPrefix(u, "https://aupd.example/desk/l/") || !exp.Equal(now.Add(7*24*time.Hour)) {
		t.Fatalf("URL %q %v %v", u, exp, ok)
	}
	tok := strings.TrimPrefix(u, "https://aupd.example/desk/l/")
	lk, err := l.Parse(tok, now.Add(time.Hour))
	if err != nil || lk.Account != "a|b@example.com" || lk.Suspension != "sus-1" {
		t.Fatalf("parse: %+v %v", lk, err)
	}
	if _, err := l.Parse(tok, exp); !errors.Is(err, ErrLinkExpired) {
		t.Errorf("at expiry: %v", err)
	}
	other := NewLinks(Config{PublicURL: "https://aupd.example/desk", LinkKey: Secret(strings.Repeat("j", 40)), LinkTTL: time.Hour})
	if _, err := other.Parse(tok, now); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("another key: %v", err)
	}
	var nilLinks *Links
	if _, _, ok := nilLinks.URL("a@b.c", "s", now); ok {
		t.Error("links without a public URL")
	}
	if l.FormToken(tok) == other.FormToken(tok) || l.FormToken(tok) == l.FormToken(tok+"x") {
		t.Error("form tokens do not depend on the key and the link")
	}
}

// FuzzLinkParse: no token makes Parse panic, and only a signed one is
// accepted.
func FuzzLinkParse(f *testing.F) {
	l := testLinks()
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	tok, _ := l.Sign("alice@example.com", "s1", now)
	f.Add(tok)
	f.Add("")
	f.Add(".")
	f.Add("MXwxfHN8YQ.x")
	f.Fuzz(func(t *testing.T, s string) {
		lk, err := l.Parse(s, now)
		if err == nil && s != tok {
			re, _ := l.Sign(lk.Account, lk.Suspension, lk.Expires.Add(-7*24*time.Hour))
			if re != s {
				t.Fatalf("accepted a token it did not sign: %q", s)
			}
		}
	})
}
