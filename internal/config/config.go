// Package config reads aupd's YAML configuration: strict (unknown keys are
// errors), defaults first, then environment overrides for connection URLs
// and secrets, then validation of everything before anything starts.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/clientaddr"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/desk"
	"github.com/aupd/aupd/internal/jobs"
	"github.com/aupd/aupd/internal/policy/dovecot"
	"github.com/aupd/aupd/internal/policy/lockout"
	"github.com/aupd/aupd/internal/policy/postfix"
	"github.com/aupd/aupd/internal/secret"

	"github.com/aupd/aupd/internal/sessionlock"

	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/rules"
)

// Secret is a string that never prints (see internal/secret).
type Secret = secret.Secret

// Config is the whole configuration.
type Config struct {
	DataDir   string              `yaml:"data_dir"`
	Log       Log                 `yaml:"log"`
	HTTP      HTTP                `yaml:"http"`
	NATS      NATS                `yaml:"nats"`
	Redis     Redis               `yaml:"redis"`
	AUP       AUP                 `yaml:"aup"`
	Companies []companies.Company `yaml:"companies"`
	Notifier  notifier.Config     `yaml:"notifier"`
	Auth      auth.Config         `yaml:"auth"`
	Policy    Policy              `yaml:"policy"`
	Sessions  sessionlock.Config  `yaml:"session_locks"`
	Jobs      jobs.Config         `yaml:"jobs"`
	Desk      desk.Config         `yaml:"desk"`
}

// Policy configures the enforcement servers that Postfix and Dovecot ask.
// An empty listen address turns a server off.
type Policy struct {
	Postfix postfix.Config `yaml:"postfix"`
	Dovecot dovecot.Config `yaml:"dovecot"`
	Lockout lockout.Config `yaml:"lockout"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// HTTP configures the listener of /metrics, /healthz, /readyz and the
// admin API.
type HTTP struct {
	Listen string `yaml:"listen"`
	// TrustedProxies are the addresses (CIDRs) of reverse proxies whose
	// X-Forwarded-For gives the client's address. Empty: it is never
	// believed, and every client behind a proxy has the proxy's address.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AuthFailures failed authentications (wrong tokens) per client
	// address and AuthFailureWindow are allowed on the admin API, the
	// session locks and /-/reload; more answer 429 until the window has
	// passed.
	AuthFailures      int           `yaml:"auth_failures"`
	AuthFailureWindow time.Duration `yaml:"auth_failure_window"`
}

// TLS configures a TLS client.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Enabled reports whether any TLS setting is made.
func (t TLS) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.InsecureSkipVerify
}

// NATS configures the connection, the streams and the consumer.
type NATS struct {
	// URLs of the NATS servers, comma-separated. Empty: run an embedded
	// server.
	URL       string   `yaml:"url"`
	CredsFile string   `yaml:"creds_file"`
	User      string   `yaml:"user"`
	Password  Secret   `yaml:"password"`
	Token     Secret   `yaml:"token"`
	TLS       TLS      `yaml:"tls"`
	Embedded  Embedded `yaml:"embedded"`
	Verdicts  Stream   `yaml:"verdict_stream"`
	Accounts  Stream   `yaml:"account_stream"`
	Dead      Stream   `yaml:"dead_letter_stream"`
	Consumer  Consumer `yaml:"consumer"`
}

// Embedded configures the embedded NATS server.
type Embedded struct {
	Listen   string `yaml:"listen"`
	StoreDir string `yaml:"store_dir"` // default: <data_dir>/nats
}

// Stream configures one JetStream stream. aupd creates a missing stream and
// never changes or deletes an existing one.
type Stream struct {
	Name      string        `yaml:"name"`
	MaxAge    time.Duration `yaml:"max_age"`
	MaxBytes  int64         `yaml:"max_bytes"` // -1: unlimited
	Replicas  int           `yaml:"replicas"`
	Storage   string        `yaml:"storage"` // file or memory
	Duplicate time.Duration `yaml:"duplicate_window"`
}

// Consumer configures the verdict consumer.
type Consumer struct {
	Durable string        `yaml:"durable"`
	Batch   int           `yaml:"batch"`
	MaxWait time.Duration `yaml:"max_wait"`
	// FillWait bounds how long a fetch waits to fill its batch (0: it
	// waits MaxWait, as before 0.3); MaxWait is then the long poll of an
	// idle fetch loop.
	FillWait      time.Duration `yaml:"fill_wait"`
	Workers       int           `yaml:"workers"`
	AckWait       time.Duration `yaml:"ack_wait"`
	MaxAckPending int           `yaml:"max_ack_pending"`
	RetryMin      time.Duration `yaml:"retry_min"`
	RetryMax      time.Duration `yaml:"retry_max"`
	// MaxDeliver bounds the deliveries of one event: the last one that
	// still fails goes to the dead letters (reason max_deliveries).
	MaxDeliver int `yaml:"max_deliver"`
}

// Redis configures the Redis client: one address for a standalone server,
// several for a Cluster, and master_name for Sentinel.
type Redis struct {
	Addrs      []string `yaml:"addrs"`
	MasterName string   `yaml:"master_name"`
	Username   string   `yaml:"username"`
	Password   Secret   `yaml:"password"`
	DB         int      `yaml:"db"`
	TLS        TLS      `yaml:"tls"`
	Prefix     string   `yaml:"prefix"`
	// Autostart starts a local redis-server under data_dir when nothing
	// answers on the default address (127.0.0.1:6379). Off by default,
	// and refused together with a configured address: a production aupd
	// must never run on an empty Redis of its own.
	Autostart bool `yaml:"autostart"`
	// WaitReplicas, when above 0, makes aupd wait until that many replicas
	// of each master hold its writes (WAIT) before it acknowledges what
	// they decided: a verdict, a notice's delivery. Set it to 1 with a
	// Redis Cluster or Sentinel, so that a failover loses nothing that was
	// acknowledged. 0 (default): no wait, for a standalone Redis.
	WaitReplicas int `yaml:"wait_replicas"`
	// WaitTimeout bounds one wait; a wait that times out is retried, and
	// nothing is acknowledged meanwhile. Default 1s.
	WaitTimeout time.Duration `yaml:"wait_timeout"`
	// ReplicaLoss is what aupd does when a master's waits come back short
	// (a promoted replica with no replica of its own): "hold" (default)
	// acknowledges nothing of that shard until a replica confirms, so its
	// events wait in JetStream; "accept" does so for ReplicaLossAfter, then
	// acknowledges that shard's writes without the replica until one
	// confirms again. Either way the other shards are acknowledged.
	ReplicaLoss string `yaml:"replica_loss"`
	// ReplicaLossAfter is how long a master's waits must have come back
	// short, without one confirmed, before "accept" takes effect. Default
	// 30s.
	ReplicaLossAfter time.Duration `yaml:"replica_loss_after"`
}

// AUP is the provider's AUP rule.
type AUP struct {
	Window     time.Duration     `yaml:"window"`
	FutureSkew time.Duration     `yaml:"future_skew"`
	Threshold  int               `yaml:"threshold"`
	MaxTracked int               `yaml:"max_tracked"`
	Directions []rules.Direction `yaml:"directions"`
	Verdicts   []rules.Verdict   `yaml:"verdicts"`
	Mode       rules.Mode        `yaml:"mode"`
	Allowlist  []string          `yaml:"allowlist"`
	// Volume are the limits on what authenticated senders send, counted
	// at the Postfix policy server (docs/postfix.md, "Volume limits").
	// Empty (the default): nothing is counted.
	Volume []rules.VolumeLimit `yaml:"volume"`
	// VolumeAllowlist holds accounts whose volume is counted and whose
	// crossings are reported, but never throttled or suspended.
	VolumeAllowlist []string `yaml:"volume_allowlist"`
	// SpamRate is the spam-rate rule (rate 0: off, the default).
	SpamRate rules.SpamRateSetting `yaml:"spam_rate"`
}

// Default returns the configuration used when no file is given.
func Default() *Config {
	return &Config{
		DataDir: "data",
		Log:     Log{Level: "info", Format: "text"},
		HTTP:    HTTP{Listen: "127.0.0.1:9390", AuthFailures: 10, AuthFailureWindow: 10 * time.Minute},
		NATS: NATS{
			Embedded: Embedded{Listen: "127.0.0.1:4223"},
			Verdicts: Stream{Name: "AUP_VERDICTS", MaxAge: 72 * time.Hour, MaxBytes: -1, Replicas: 1, Storage: "file", Duplicate: 2 * time.Minute},
			Accounts: Stream{Name: "AUP_ACCOUNTS", MaxAge: 30 * 24 * time.Hour, MaxBytes: -1, Replicas: 1, Storage: "file", Duplicate: 10 * time.Minute},
			Dead:     Stream{Name: "AUP_DEAD_LETTERS", MaxAge: 30 * 24 * time.Hour, MaxBytes: 1 << 30, Replicas: 1, Storage: "file", Duplicate: 2 * time.Minute},
			Consumer: Consumer{Durable: "aupd-worker", Batch: 500, MaxWait: 100 * time.Millisecond, FillWait: 10 * time.Millisecond, Workers: 4, AckWait: 30 * time.Second, MaxAckPending: 20000, RetryMin: time.Second, RetryMax: time.Minute, MaxDeliver: 200},
		},
		Redis: Redis{Addrs: []string{"127.0.0.1:6379"}, Prefix: "aup", WaitTimeout: time.Second, ReplicaLoss: "hold", ReplicaLossAfter: 30 * time.Second},
		AUP: AUP{
			Window: 24 * time.Hour, FutureSkew: 5 * time.Minute, Threshold: 50, MaxTracked: 0,
			Directions: []rules.Direction{rules.Outbound, rules.Inbound, rules.Complaint},
			Verdicts:   []rules.Verdict{rules.Spam, rules.Phish, rules.Virus},
			Mode:       rules.ModeEnforce,
		},
		Notifier: defaultNotifier(),
		Policy:   Policy{Postfix: postfix.Defaults(), Dovecot: dovecot.Defaults(), Lockout: lockout.Defaults()},
		Sessions: sessionlock.Defaults(),
		Jobs:     jobs.Defaults(),
		Desk:     desk.Defaults(),
	}
}

// defaultNotifier writes notices as .eml files under data/notices, so
// that aupd runs with no SMTP server and no config. A file that
// configures notifier.smtp sends by SMTP (see settle).
func defaultNotifier() notifier.Config {
	n := notifier.Defaults()
	n.EMLDir = "data/notices"
	n.From = "aupd@localhost"
	n.FallbackAbuseContact = "abuse@localhost"
	return n
}

// Load reads a config file over the defaults; an empty path gives the
// defaults. Environment overrides apply in both cases. Relative paths in
// the file resolve against the file's directory. Every error names the
// file, and the key (with its line) where it can.
func Load(path string) (*Config, error) {
	cfg := Default()
	var (
		doc  *document
		dir  string
		name = "(defaults)"
	)
	if path != "" {
		name = path
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("open config: %w", err)
		}
		if doc, err = decodeFile(data, cfg); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		dir = filepath.Dir(abs)
	}
	errs := cfg.settle(doc, dir, os.Getenv)
	if d := cfg.Notifier.EMLDir; d != "" && len(errs) == 0 {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("config %s: notifier.eml_dir: %w", name, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("config %s:\n%w", name, doc.locate(errors.Join(errs...)))
	}
	return cfg, nil
}

// Parse reads a config document over the defaults without environment
// overrides (for tests and check-config of a given text).
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	doc, err := decodeFile(data, cfg)
	if err != nil {
		return nil, err
	}
	errs := cfg.settle(doc, "", func(string) string { return "" })
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, doc.locate(errors.Join(errs...))
	}
	return cfg, nil
}

func decode(r io.Reader, cfg *Config) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Environment variables that override the file.
const (
	EnvNATSURL       = "AUPD_NATS_URL"
	EnvNATSCreds     = "AUPD_NATS_CREDS"
	EnvNATSUser      = "AUPD_NATS_USER"
	EnvNATSPassword  = "AUPD_NATS_PASSWORD"
	EnvNATSToken     = "AUPD_NATS_TOKEN"
	EnvRedisAddrs    = "AUPD_REDIS_ADDRS"
	EnvRedisPassword = "AUPD_REDIS_PASSWORD"
	EnvRedisUsername = "AUPD_REDIS_USERNAME"
	EnvHTTPListen    = "AUPD_HTTP_LISTEN"
	EnvDataDir       = "AUPD_DATA_DIR"
	EnvSMTPPassword  = "AUPD_SMTP_PASSWORD"
	EnvDovecotAPIKey = "AUPD_DOVECOT_API_KEY"
	EnvDeskLinkKey   = "AUPD_DESK_LINK_KEY"
	// EnvDovecotPreviousAPIKey is policy.dovecot.previous_api_key.
	EnvDovecotPreviousAPIKey = "AUPD_DOVECOT_PREVIOUS_API_KEY"
	// The other listeners, so that a second aupd on one host (a trial
	// beside a running one) moves every port without a file.
	EnvNATSEmbeddedListen = "AUPD_NATS_EMBEDDED_LISTEN"
	EnvPostfixListen      = "AUPD_POSTFIX_LISTEN"
	EnvDovecotListen      = "AUPD_DOVECOT_LISTEN"
)

// applyEnv applies the environment overrides; each may instead name a
// file holding the value (NAME_FILE).
func (c *Config) applyEnv(get func(string) string) error {
	var errs []error
	value := func(name string) string {
		v, err := envValue(get, name)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	set := func(dst *string, name string) {
		if v := value(name); v != "" {
			*dst = v
		}
	}
	setSecret := func(dst *Secret, name string) {
		if v := value(name); v != "" {
			*dst = Secret(v)
		}
	}
	set(&c.NATS.URL, EnvNATSURL)
	set(&c.NATS.CredsFile, EnvNATSCreds)
	set(&c.NATS.User, EnvNATSUser)
	setSecret(&c.NATS.Password, EnvNATSPassword)
	setSecret(&c.NATS.Token, EnvNATSToken)
	if v := value(EnvRedisAddrs); v != "" {
		c.Redis.Addrs = strings.Split(v, ",")
	}
	setSecret(&c.Redis.Password, EnvRedisPassword)
	set(&c.Redis.Username, EnvRedisUsername)
	set(&c.HTTP.Listen, EnvHTTPListen)
	set(&c.NATS.Embedded.Listen, EnvNATSEmbeddedListen)
	set(&c.Policy.Postfix.Listen, EnvPostfixListen)
	set(&c.Policy.Dovecot.Listen, EnvDovecotListen)
	set(&c.DataDir, EnvDataDir)
	setSecret(&c.Notifier.SMTP.Password, EnvSMTPPassword)
	setSecret(&c.Policy.Dovecot.APIKey, EnvDovecotAPIKey)
	setSecret(&c.Policy.Dovecot.PreviousAPIKey, EnvDovecotPreviousAPIKey)
	setSecret(&c.Desk.LinkKey, EnvDeskLinkKey)
	return errors.Join(errs...)
}

// Validate checks every setting and reports all problems at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	c.checkPlaceholders(bad)
	if c.DataDir == "" {
		bad("data_dir: must not be empty")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format: %q is not text or json", c.Log.Format)
	}
	if c.HTTP.Listen == "" {
		bad("http.listen: must not be empty")
	}
	if _, err := clientaddr.New(c.HTTP.TrustedProxies); err != nil {
		bad("http.trusted_proxies: %v", err)
	}
	if c.HTTP.AuthFailures < 1 || c.HTTP.AuthFailureWindow < time.Second {
		bad("http.auth_failures must be at least 1 and http.auth_failure_window at least 1s")
	}
	// Slices, not maps, here and below: the joined error reads in the
	// same order on every run.
	for _, ns := range []struct {
		name string
		s    Stream
	}{{"verdict_stream", c.NATS.Verdicts}, {"account_stream", c.NATS.Accounts}, {"dead_letter_stream", c.NATS.Dead}} {
		name, s := ns.name, ns.s
		if s.Name == "" || strings.ContainsAny(s.Name, ". *>") {
			bad("nats.%s.name: %q is not a stream name", name, s.Name)
		}
		if s.Storage != "file" && s.Storage != "memory" {
			bad("nats.%s.storage: %q is not file or memory", name, s.Storage)
		}
		if s.Replicas < 1 || s.Replicas > 5 {
			bad("nats.%s.replicas: %d is not 1 to 5", name, s.Replicas)
		}
		if s.MaxAge < 0 || s.Duplicate <= 0 {
			bad("nats.%s: max_age must not be negative and duplicate_window must be positive", name)
		}
	}
	if c.NATS.Verdicts.MaxAge != 0 && c.NATS.Verdicts.MaxAge < 2*c.AUP.Window {
		bad("nats.verdict_stream.max_age: %s keeps less than two windows (%s); evidence and replays need the events", c.NATS.Verdicts.MaxAge, 2*c.AUP.Window)
	}
	if c.NATS.URL == "" && c.NATS.Embedded.Listen == "" {
		bad("nats: set url, or embedded.listen for the embedded server")
	}
	cs := c.NATS.Consumer
	if cs.Durable == "" || strings.ContainsAny(cs.Durable, ". *>") {
		bad("nats.consumer.durable: %q is not a consumer name", cs.Durable)
	}
	if cs.Batch < 1 || cs.Batch > 10000 {
		bad("nats.consumer.batch: %d is not 1 to 10000", cs.Batch)
	}
	if cs.Workers < 1 || cs.Workers > 64 {
		bad("nats.consumer.workers: %d is not 1 to 64", cs.Workers)
	}
	if cs.MaxWait <= 0 || cs.AckWait <= 0 || cs.RetryMin <= 0 || cs.RetryMax < cs.RetryMin {
		bad("nats.consumer: max_wait, ack_wait and retry_min must be positive and retry_max at least retry_min")
	}
	if cs.FillWait < 0 || cs.FillWait > cs.MaxWait {
		bad("nats.consumer.fill_wait: %s is not 0 to max_wait (%s)", cs.FillWait, cs.MaxWait)
	}
	if cs.MaxDeliver < 2 {
		bad("nats.consumer.max_deliver: %d is less than 2", cs.MaxDeliver)
	}
	if cs.MaxAckPending < cs.Batch*cs.Workers {
		bad("nats.consumer.max_ack_pending: %d is less than batch*workers (%d)", cs.MaxAckPending, cs.Batch*cs.Workers)
	}
	if len(c.Redis.Addrs) == 0 {
		bad("redis.addrs: at least one address is needed")
	}
	if c.Redis.WaitReplicas < 0 || c.Redis.WaitReplicas > 5 {
		bad("redis.wait_replicas: %d is not 0 to 5", c.Redis.WaitReplicas)
	}
	if c.Redis.WaitReplicas > 0 && (c.Redis.WaitTimeout < 10*time.Millisecond || c.Redis.WaitTimeout > 10*time.Second) {
		bad("redis.wait_timeout: %s is not 10ms to 10s", c.Redis.WaitTimeout)
	}
	if c.Redis.ReplicaLoss != "hold" && c.Redis.ReplicaLoss != "accept" {
		bad("redis.replica_loss: %q is not hold or accept", c.Redis.ReplicaLoss)
	}
	if c.Redis.ReplicaLossAfter < time.Second || c.Redis.ReplicaLossAfter > time.Hour {
		bad("redis.replica_loss_after: %s is not 1s to 1h", c.Redis.ReplicaLossAfter)
	}
	if c.Redis.Prefix == "" || strings.ContainsAny(c.Redis.Prefix, "{} ") {
		bad("redis.prefix: %q must be non-empty, without braces or spaces", c.Redis.Prefix)
	}
	a := c.AUP
	if a.Window < time.Minute {
		bad("aup.window: %s is shorter than a minute", a.Window)
	}
	if a.FutureSkew < 0 {
		bad("aup.future_skew: must not be negative")
	}
	if a.Threshold < 1 {
		bad("aup.threshold: %d: must be at least 1 (a count exceeding it suspends)", a.Threshold)
	}
	if !a.Mode.Valid() {
		bad("aup.mode: %q is not enforce or shadow", a.Mode)
	}
	for _, d := range a.Directions {
		if !d.Valid() {
			bad("aup.directions: %q is not outbound, inbound or complaint", d)
		}
	}
	for _, v := range a.Verdicts {
		if !v.Valid() || v == rules.Ham {
			bad("aup.verdicts: %q is not spam, phish or virus", v)
		}
	}
	if err := a.SpamRate.Validate(); err != nil {
		bad("aup.spam_rate: %v", err)
	}
	if a.SpamRate.Rate > 0 && !slices.Contains(a.Directions, rules.Outbound) {
		bad("aup.spam_rate: the rule weighs outbound spam, and aup.directions does not count outbound")
	}
	if a.MaxTracked != 0 && (a.MaxTracked < 10 || a.MaxTracked > 100000) {
		bad("aup.max_tracked: %d is not 0 (threshold + 1) or 10 to 100000", a.MaxTracked)
	}
	if err := c.normalizeAllowlist(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, volumeErrors("aup.volume", a.Volume)...)
	if _, err := companies.New(nil, "check", c.Companies); err != nil {
		bad("companies: %v", err)
	}
	for i, co := range c.Companies {
		if co.Threshold != nil && *co.Threshold < 1 {
			bad("companies[%d].threshold: %d: must be at least 1", i, *co.Threshold)
		}
		if co.Volume != nil {
			errs = append(errs, volumeErrors(fmt.Sprintf("companies[%d].volume", i), *co.Volume)...)
		}
	}
	c.Notifier.Stream = c.NATS.Accounts.Name
	for _, sec := range []struct {
		name string
		v    interface{ Validate() error }
	}{
		{"notifier", c.Notifier}, {"auth", c.Auth}, {"session_locks", c.Sessions}, {"policy.lockout", c.Policy.Lockout}, {"jobs", c.Jobs},
		{"desk", c.Desk},
	} {
		if err := sec.v.Validate(); err != nil {
			errs = append(errs, prefixed(sec.name, err)...)
		}
	}
	if c.Policy.Postfix.Listen != "" || c.Policy.Postfix.UnixSocket != "" {
		if err := c.Policy.Postfix.Validate(); err != nil {
			errs = append(errs, prefixed("policy.postfix", err)...)
		}
	}
	if c.Policy.Dovecot.Listen != "" {
		if err := c.Policy.Dovecot.Validate(); err != nil {
			errs = append(errs, prefixed("policy.dovecot", err)...)
		}
	}
	return errors.Join(errs...)
}

// OutsideCompanies says how aupd treats an account whose domain is in no
// company (the configured ones; companies added over the API are counted
// by the caller in n). Start-up logs it and check-config prints it, so
// that an operator without a company list knows that suspensions still
// hold and where their notices go.
func (c *Config) OutsideCompanies(n int) string {
	s := "an account whose domain is in no company is governed like any other once aupd holds a record of it: " +
		"its outbound spam and complaints count toward a suspension (its inbound verdicts are statistics only), " +
		"every suspension and status aupd holds for it is enforced by Postfix, Dovecot and webmail, " +
		"failed logins count toward its lockout once it has a record, " +
		"and its notices go to notifier.fallback_abuse_contact (" + c.Notifier.FallbackAbuseContact + ")"
	if n == 0 {
		return "no companies, so every account is outside every company: " + s
	}
	return s
}

// NoticeWarnings lists what in the configuration may send an abuse notice
// to the very mailbox it is about: a company's abuse contact in one of the
// company's own domains (a mailbox aupd may suspend; its notice would
// then go to the fallback contact instead), and a fallback contact in a
// company's domain (a mailbox aupd may suspend too; a notice about it
// would then be sent to nobody). The notifier never sends a notice to its
// own mailbox; these warn before that happens. check-config prints them
// and start-up logs them. Companies added over the API are not checked.
func (c *Config) NoticeWarnings() []string {
	var out []string
	domainOf := func(addr string) string {
		if a, err := mail.ParseAddress(addr); err == nil {
			addr = a.Address
		}
		i := strings.LastIndexByte(addr, '@')
		if i < 0 {
			return ""
		}
		return strings.TrimSuffix(strings.ToLower(addr[i+1:]), ".")
	}
	inDomains := func(domains []string, d string) bool {
		return d != "" && slices.ContainsFunc(domains, func(x string) bool { return strings.EqualFold(strings.TrimSuffix(x, "."), d) })
	}
	for _, co := range c.Companies {
		if co.AbuseContact == "" {
			continue
		}
		if d := domainOf(co.AbuseContact); inDomains(co.Domains, d) {
			out = append(out, fmt.Sprintf("company %s: abuse_contact %s is in the company's own domain %s: if aupd suspends that mailbox, its notice goes to notifier.fallback_abuse_contact instead (a notice never goes to the mailbox it is about); prefer a contact outside the company's mail", co.ID, co.AbuseContact, d))
		}
	}
	if fb := c.Notifier.FallbackAbuseContact; fb != "" {
		d := domainOf(fb)
		for _, co := range c.Companies {
			if inDomains(co.Domains, d) {
				out = append(out, fmt.Sprintf("notifier.fallback_abuse_contact %s is in domain %s of company %s: if aupd suspends that mailbox, its notice cannot go to the fallback and is not sent at all; use a provider address outside every company's domains", fb, d, co.ID))
			}
		}
	}
	return out
}
