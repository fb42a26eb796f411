package notifier

import (
	"errors"
	"fmt"
	"net/mail"
	"os"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/secret"
)

// Secret is a string that never shows itself (see internal/secret).
type Secret = secret.Secret

// TLS modes of the SMTP connection.
const (
	TLSNone     = "none"     // plain SMTP, no encryption
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS, which is mandatory
	TLSImplicit = "tls"      // implicit TLS from the first byte (SMTPS, RFC 8314)
)

// SMTPConfig is how notices reach the provider's mail relay.
type SMTPConfig struct {
	Host string `yaml:"host"`
	// Port 0 means the usual port of the TLS mode: 25 (none), 587
	// (starttls) or 465 (tls).
	Port     int    `yaml:"port"`
	TLS      string `yaml:"tls"`
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// Timeout bounds the connection and each SMTP command.
	Timeout time.Duration `yaml:"timeout"`
	// HELO is the name this client announces; empty means the host name.
	HELO               string `yaml:"helo"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// TemplatesConfig names template files that replace the built-in texts.
// Empty means the built-in default.
type TemplatesConfig struct {
	Subject string `yaml:"subject"`
	Body    string `yaml:"body"`
}

// Config is the notifier's section of the aupd configuration.
type Config struct {
	SMTP SMTPConfig `yaml:"smtp"`
	// From and ReplyTo are RFC 5322 addresses, with or without a display
	// name ("Abuse Desk <abuse@provider.example>").
	From    string `yaml:"from"`
	ReplyTo string `yaml:"reply_to"`
	// FallbackAbuseContact receives the notice when the company has no
	// abuse contact of its own (or an unusable one).
	FallbackAbuseContact string `yaml:"fallback_abuse_contact"`
	// SubjectTag starts every subject; the abuse team's mail rules can
	// match it (the header X-Aupd-Notice is set as well).
	SubjectTag string          `yaml:"subject_tag"`
	Templates  TemplatesConfig `yaml:"templates"`
	// ProviderName is how the notice names the sender of the notice, as
	// written mid-sentence ("from your mail provider"); the signature
	// starts it with a capital letter.
	ProviderName string `yaml:"provider_name"`
	// APIURL is the base URL of the admin API shown in the reinstate
	// instructions; empty shows https://<aupd server> for the reader to
	// fill in.
	APIURL string `yaml:"api_url"`
	// EMLDir, when set, makes the notifier write each notice as an .eml
	// file into this directory instead of sending it (local runs).
	EMLDir string `yaml:"eml_dir"`
	// GiveUpAfter is how long temporary failures are retried, from the
	// first attempt, before the notice is marked failed.
	GiveUpAfter time.Duration `yaml:"give_up_after"`
	RetryMin    time.Duration `yaml:"retry_min"`
	RetryMax    time.Duration `yaml:"retry_max"`
	// AckWait is the JetStream consumer's ack wait.
	AckWait time.Duration `yaml:"ack_wait"`
	// Stream is the JetStream stream of account events; Durable is the
	// name of the notifier's durable consumer on it.
	Stream  string `yaml:"-"` // set from nats.account_stream.name
	Durable string `yaml:"durable"`
	// EvidenceMaxBytes is how much of each sample's message text goes
	// into evidence.txt; the rest is cut with a visible marker.
	EvidenceMaxBytes int `yaml:"evidence_max_bytes"`
	// Retention is how long a completed notice (sent or failed) and its
	// evidence are kept for the admin API.
	Retention time.Duration `yaml:"retention"`
	// MessageIDDomain is the right-hand side of Message-IDs; empty means
	// the domain of From.
	MessageIDDomain string `yaml:"message_id_domain"`
}

// Defaults returns a Config with every default set. From and
// FallbackAbuseContact have no default and must be configured.
func Defaults() Config {
	return Config{
		SMTP: SMTPConfig{
			Host:    "localhost",
			TLS:     TLSStartTLS,
			Timeout: 30 * time.Second,
		},
		SubjectTag:       "[AUP]",
		ProviderName:     "your mail provider",
		GiveUpAfter:      48 * time.Hour,
		RetryMin:         30 * time.Second,
		RetryMax:         30 * time.Minute,
		AckWait:          2 * time.Minute,
		Stream:           "AUP_ACCOUNTS",
		Durable:          "aupd-notifier",
		EvidenceMaxBytes: 16 << 10,
		Retention:        90 * 24 * time.Hour,
	}
}

// Validate checks the configuration, including parsing the templates, so
// that `aupd check-config` reports every mistake before anything starts.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.EMLDir == "" {
		if c.SMTP.Host == "" {
			add("smtp.host: must be set (or set eml_dir)")
		}
		if c.SMTP.Port < 0 || c.SMTP.Port > 65535 {
			add("smtp.port: %d is not a port", c.SMTP.Port)
		}
		switch c.SMTP.TLS {
		case TLSNone, TLSStartTLS, TLSImplicit:
		default:
			add("smtp.tls: must be none, starttls or tls, got %q", c.SMTP.TLS)
		}
		if c.SMTP.Timeout <= 0 {
			add("smtp.timeout: must be positive")
		}
		if c.SMTP.Password != "" && c.SMTP.Username == "" {
			add("smtp.password: set without smtp.username")
		}
	} else if fi, err := os.Stat(c.EMLDir); err != nil || !fi.IsDir() {
		add("eml_dir: %q is not a directory", c.EMLDir)
	}
	from, err := parseAddress(c.From)
	if err != nil {
		add("from: %v", err)
	}
	if c.ReplyTo != "" {
		if _, err := parseAddress(c.ReplyTo); err != nil {
			add("reply_to: %v", err)
		}
	}
	if _, err := parseAddress(c.FallbackAbuseContact); err != nil {
		add("fallback_abuse_contact: %v", err)
	}
	if c.SubjectTag != cleanLine(c.SubjectTag, 64) {
		add("subject_tag: must be one line of at most 64 characters")
	}
	if c.ProviderName != cleanLine(c.ProviderName, 200) {
		add("provider_name: must be one line of at most 200 characters")
	}
	if c.APIURL != "" && !strings.HasPrefix(c.APIURL, "https://") && !strings.HasPrefix(c.APIURL, "http://") {
		add("api_url: must start with https:// or http://")
	}
	if c.GiveUpAfter <= 0 {
		add("give_up_after: must be positive")
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		add("retry_min, retry_max: need 0 < retry_min <= retry_max")
	}
	if c.AckWait < time.Second {
		add("ack_wait: must be at least 1s")
	}
	if c.Stream == "" || strings.ContainsAny(c.Stream, ".*> \t") {
		add("stream: %q is not a stream name", c.Stream)
	}
	if c.Durable == "" || strings.ContainsAny(c.Durable, ".*> \t") {
		add("durable: %q is not a consumer name", c.Durable)
	}
	if c.EvidenceMaxBytes < 256 || c.EvidenceMaxBytes > 1<<20 {
		add("evidence_max_bytes: must be between 256 and 1048576")
	}
	if c.Retention < time.Hour {
		add("retention: must be at least 1h")
	}
	if c.MessageIDDomain != "" && !validMessageIDDomain(c.MessageIDDomain) {
		add("message_id_domain: %q is not a domain", c.MessageIDDomain)
	}
	if c.MessageIDDomain == "" && from != nil && !validMessageIDDomain(domainOf(from.Address)) {
		add("message_id_domain: must be set, the domain of from is not usable")
	}
	if _, err := loadTemplates(c.Templates); err != nil {
		add("templates: %v", err)
	}
	return errors.Join(errs...)
}

func parseAddress(s string) (*mail.Address, error) {
	if s == "" {
		return nil, errors.New("must be set")
	}
	if s != cleanLine(s, 320) {
		return nil, errors.New("must be one line without control characters")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not an email address: %w", s, err)
	}
	if strings.ContainsAny(a.Address, "<>\r\n ") {
		return nil, fmt.Errorf("%q is not a usable email address", s)
	}
	return a, nil
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

func validMessageIDDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, c := range []byte(d) {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}
