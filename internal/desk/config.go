package desk

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/secret"
)

// Secret is a string that never prints (see internal/secret).
type Secret = secret.Secret

// Config is the abuse desk's section of the aupd configuration (`desk:`).
// The desk is off unless enabled; the signed link in notices needs
// public_url and link_key as well.
type Config struct {
	// Enabled serves the desk under /desk/ on the HTTP listener.
	Enabled bool `yaml:"enabled"`
	// PublicURL is where abuse contacts reach the desk, for example
	// https://aupd.provider.example/desk (the /desk/ of this listener,
	// through whatever proxy is in front). When set, every notice carries
	// a signed link to the account's page. Empty: no links.
	PublicURL string `yaml:"public_url"`
	// LinkKey is the HMAC-SHA256 key that signs the links: at least 32
	// characters, random, never a token. Changing it voids every link.
	LinkKey Secret `yaml:"link_key"`
	// LinkTTL is how long a link works after its notice was rendered.
	LinkTTL time.Duration `yaml:"link_ttl"`
	// SessionTTL is how long a desk session lasts after sign-in.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// SignInAttempts sign-ins are allowed per client address and
	// SignInWindow; more answer 429 until the window has passed.
	SignInAttempts int           `yaml:"sign_in_attempts"`
	SignInWindow   time.Duration `yaml:"sign_in_window"`
	// SignInLinkTTL is how long a sign-in link mailed to an abuse contact
	// works (once). Links by mail need public_url and link_key.
	SignInLinkTTL time.Duration `yaml:"sign_in_link_ttl"`
	// SignInMails links are mailed at most per address and
	// SignInMailWindow; more asks are answered as usual and send nothing.
	SignInMails      int           `yaml:"sign_in_mails"`
	SignInMailWindow time.Duration `yaml:"sign_in_mail_window"`
}

// Defaults returns the desk's defaults: off, links valid for 7 days,
// sessions of 8 hours, 10 sign-ins per 10 minutes per client address,
// sign-in links valid for 15 minutes, 3 of them per 15 minutes per
// address.
func Defaults() Config {
	return Config{
		LinkTTL:          7 * 24 * time.Hour,
		SessionTTL:       8 * time.Hour,
		SignInAttempts:   10,
		SignInWindow:     10 * time.Minute,
		SignInLinkTTL:    15 * time.Minute,
		SignInMails:      3,
		SignInMailWindow: 15 * time.Minute,
	}
}

// MinKeyLength is the shortest link key accepted.
const MinKeyLength = 32

// Validate checks the config and reports all problems at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			bad("public_url: %q is not an http(s) URL", c.PublicURL)
		case u.RawQuery != "" || u.Fragment != "":
			bad("public_url: must have no query or fragment")
		case strings.TrimSuffix(u.Path, "/") != "/desk":
			// The desk's pages, cookies and redirects are under /desk/:
			// links to another path answer 404.
			bad("public_url: %q must end in /desk (the desk's path, e.g. https://aupd.provider.example/desk)", c.PublicURL)
		}
		if !c.Enabled {
			bad("public_url: set, but the desk is not enabled (enabled: true)")
		}
		if len(c.LinkKey) < MinKeyLength {
			bad("link_key: public_url needs a link key of at least %d characters (for example: openssl rand -base64 48)", MinKeyLength)
		}
	}
	if c.LinkKey != "" && len(c.LinkKey) < MinKeyLength {
		bad("link_key: shorter than %d characters", MinKeyLength)
	}
	if c.LinkTTL < time.Hour || c.LinkTTL > 90*24*time.Hour {
		bad("link_ttl: %s is not 1h to 90 days", c.LinkTTL)
	}
	if c.SessionTTL < 5*time.Minute || c.SessionTTL > 7*24*time.Hour {
		bad("session_ttl: %s is not 5m to 7 days", c.SessionTTL)
	}
	if c.SignInAttempts < 1 || c.SignInWindow < time.Second {
		bad("sign_in_attempts, sign_in_window: need at least 1 attempt per 1s")
	}
	if c.SignInLinkTTL < time.Minute || c.SignInLinkTTL > 24*time.Hour {
		bad("sign_in_link_ttl: %s is not 1m to 24h", c.SignInLinkTTL)
	}
	if c.SignInMails < 1 || c.SignInMailWindow < time.Minute {
		bad("sign_in_mails, sign_in_mail_window: need at least 1 mail per 1m")
	}
	return errors.Join(errs...)
}

// MailsSignInLinks reports whether abuse contacts can ask for a sign-in
// link by mail: the desk is on, with public_url and link_key.
func (c Config) MailsSignInLinks() bool {
	return c.Enabled && c.PublicURL != "" && len(c.LinkKey) >= MinKeyLength
}

// Notes says what the desk's settings leave out, for check-config and
// start-up: a desk without public_url or link_key offers API tokens only.
func (c Config) Notes() []string {
	if c.Enabled && !c.MailsSignInLinks() {
		return []string{"desk: public_url and link_key are not both set, so abuse contacts cannot ask for a sign-in link by mail; the sign-in page offers API tokens only"}
	}
	return nil
}

// secure reports whether the desk is reached over TLS as configured.
func (c Config) secure() bool { return strings.HasPrefix(c.PublicURL, "https://") }
