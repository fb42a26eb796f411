// Package sessionagent holds aupd's mailbox session locks for the IMAP and
// POP3 sessions of one Dovecot host (docs/dovecot.md, "Mailbox session
// locks").
//
// Two programs share it. The agent is one long-running process per host:
// it takes, renews and releases locks through aupd's session-lock API, and
// watches the process that serves each session through a pidfd, all in one
// epoll set, so that an idle session costs no CPU and the lock is released
// as soon as the process exits. The login program is Dovecot's post-login
// program (script-login): it asks the agent for the session's lock, then
// hands the session back to Dovecot (exec) or refuses it.
package sessionagent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultConfigFile is where both programs read their settings.
const DefaultConfigFile = "/etc/aupd/sessiond.yml"

// Config is the settings file of aupd-sessiond (agent and login).
type Config struct {
	// URL is aupd's HTTP listener.
	URL string `yaml:"aupd_url"`
	// TokenFile holds a viewer API token without a company scope; root
	// only. Read by the agent alone.
	TokenFile string `yaml:"token_file"`
	// Socket is the agent's unix socket (mode 0600, owner root).
	Socket string `yaml:"socket"`
	// StateFile is the agent's journal of the locks it holds, read at
	// start to re-adopt or release the locks of its previous run.
	StateFile string `yaml:"state_file"`
	// Lease is the lease of every lock; within aupd's session_locks
	// min_lease and max_lease. Default 20m.
	Lease time.Duration `yaml:"lease"`
	// RenewEvery is how often a lock is renewed. Default half the lease.
	RenewEvery time.Duration `yaml:"renew_every"`
	// RequestTimeout bounds one request to aupd. Default 5s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// Holder names this host in the locks (aupctl and the API list it).
	// Default the host name.
	Holder string `yaml:"holder"`
	// OnError is what the login program does when the agent or aupd
	// cannot be asked: "allow" (default) or "refuse".
	OnError string `yaml:"on_error"`
	// LoginTimeout bounds the login program's wait for the agent.
	// Default 10s.
	LoginTimeout time.Duration `yaml:"login_timeout"`
	// Keepalive is set on every session's client TCP connection by the
	// login program; it bounds how long a client that vanished without
	// closing its connection keeps its lock.
	Keepalive Keepalive `yaml:"keepalive"`
}

// Keepalive are the TCP settings of a session's client connection.
type Keepalive struct {
	// Off leaves the connection's keepalive settings alone.
	Off bool `yaml:"off"`
	// Idle: silence before the first probe (TCP_KEEPIDLE). Default 60s.
	Idle time.Duration `yaml:"idle"`
	// Interval between probes (TCP_KEEPINTVL). Default 15s.
	Interval time.Duration `yaml:"interval"`
	// Count of unanswered probes that end the connection (TCP_KEEPCNT).
	// Default 4.
	Count int `yaml:"count"`
	// UserTimeout (TCP_USER_TIMEOUT): how long sent data, or probes, may
	// stay unacknowledged before the connection ends. Default 120s; 0s
	// leaves it to Count.
	UserTimeout *time.Duration `yaml:"user_timeout"`
}

// Defaults returns the default settings.
func Defaults() Config {
	ut := 120 * time.Second
	return Config{
		URL:            "http://127.0.0.1:9390",
		TokenFile:      "/etc/aupd/sessiond.token",
		Socket:         "/run/aupd-sessiond/agent.sock",
		StateFile:      "/var/lib/aupd-sessiond/locks",
		Lease:          20 * time.Minute,
		RequestTimeout: 5 * time.Second,
		OnError:        "allow",
		LoginTimeout:   10 * time.Second,
		Keepalive:      Keepalive{Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4, UserTimeout: &ut},
	}
}

// withDefaults fills the unset settings.
func (c Config) withDefaults() Config {
	d := Defaults()
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.URL, d.URL)
	set(&c.TokenFile, d.TokenFile)
	set(&c.Socket, d.Socket)
	set(&c.StateFile, d.StateFile)
	set(&c.OnError, d.OnError)
	setD(&c.Lease, d.Lease)
	setD(&c.RenewEvery, c.Lease/2)
	setD(&c.RequestTimeout, d.RequestTimeout)
	setD(&c.LoginTimeout, d.LoginTimeout)
	setD(&c.Keepalive.Idle, d.Keepalive.Idle)
	setD(&c.Keepalive.Interval, d.Keepalive.Interval)
	if c.Keepalive.Count == 0 {
		c.Keepalive.Count = d.Keepalive.Count
	}
	if c.Keepalive.UserTimeout == nil {
		c.Keepalive.UserTimeout = d.Keepalive.UserTimeout
	}
	if c.Holder == "" {
		c.Holder, _ = os.Hostname()
	}
	return c
}

// Validate reports the first invalid setting of a completed config.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("aupd_url: want http(s)://host:port, got %q", c.URL)
	case c.Socket == "":
		return errors.New("socket: empty")
	case c.Lease < time.Second || c.Lease%time.Second != 0:
		return fmt.Errorf("lease: want whole seconds, at least 1s, got %s", c.Lease)
	case c.RenewEvery <= 0 || c.RenewEvery >= c.Lease:
		return fmt.Errorf("renew_every: want more than 0 and less than the lease %s, got %s", c.Lease, c.RenewEvery)
	case c.RequestTimeout <= 0 || c.LoginTimeout <= 0:
		return errors.New("request_timeout and login_timeout must be positive")
	case c.OnError != "allow" && c.OnError != "refuse":
		return fmt.Errorf(`on_error: want "allow" or "refuse", got %q`, c.OnError)
	}
	k := c.Keepalive
	if !k.Off && (k.Idle < time.Second || k.Interval < time.Second || k.Count < 1 || k.Count > 127 ||
		*k.UserTimeout < 0 || k.Idle > 32767*time.Second || k.Interval > 32767*time.Second) {
		return fmt.Errorf("keepalive: idle and interval must be 1s to 32767s, count 1 to 127, user_timeout not negative; got %+v", k)
	}
	return nil
}

// VanishBound is how long after the last packet from a client that
// vanished without closing its connection (power cut, network gone) the
// kernel ends an idle connection with these settings; the lock is released
// as soon as the imap or pop3 process then exits. Linux sends the first
// probe after Idle of silence and one every Interval after it; with a
// UserTimeout it gives up at the first probe time at or after UserTimeout
// once a probe went unanswered, without it after Count probes.
func (k Keepalive) VanishBound() time.Duration {
	if k.Off {
		return 0
	}
	ut := time.Duration(0)
	if k.UserTimeout != nil {
		ut = *k.UserTimeout
	}
	if ut == 0 {
		return k.Idle + time.Duration(k.Count)*k.Interval
	}
	t := k.Idle + k.Interval
	for t < ut {
		t += k.Interval
	}
	return t
}

// LoadConfig reads, completes and validates the settings file. Unknown
// keys are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Complete returns c with its defaults, validated; for callers that build
// a Config in code (tests, benchmarks).
func (c Config) Complete() (Config, error) {
	c = c.withDefaults()
	return c, c.Validate()
}
