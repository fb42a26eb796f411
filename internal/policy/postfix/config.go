package postfix

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config configures the Postfix policy server. The YAML keys are snake_case;
// zero values are replaced by Defaults.
type Config struct {
	// Listen is the TCP address, host:port. Postfix's check_policy_service
	// inet:HOST:PORT points here.
	Listen string `yaml:"listen"`
	// UnixSocket is an optional path of a unix socket to serve as well
	// (check_policy_service unix:PATH, or an absolute path).
	UnixSocket string `yaml:"unix_socket"`
	// UnixSocketMode is the permission of the unix socket, octal.
	UnixSocketMode uint32 `yaml:"unix_socket_mode"`
	// MaxConnections bounds concurrent connections. Every smtpd process
	// holds one connection while it lives, so set it above the sum of the
	// smtpd process limits (default_process_limit) of all Postfix hosts.
	MaxConnections int `yaml:"max_connections"`
	// IdleTimeout closes a connection that sends no request for this long.
	// Postfix closes idle policy connections itself after
	// smtpd_policy_service_max_idle (300s), so keep it longer.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RequestTimeout bounds reading one request once its first line came,
	// and writing the reply.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// LookupTimeout bounds the account lookups of one request.
	LookupTimeout time.Duration `yaml:"lookup_timeout"`
	// MaxLineBytes bounds one attribute line; MaxRequestBytes one request;
	// MaxAttributes the attributes of one request.
	MaxLineBytes    int `yaml:"max_line_bytes"`
	MaxRequestBytes int `yaml:"max_request_bytes"`
	MaxAttributes   int `yaml:"max_attributes"`
	// ErrorAction answers a request when an account lookup fails. The default
	// DEFER_IF_PERMIT is a temporary failure that applies only if nothing
	// else rejects the mail: the client retries later, and no mail is
	// accepted that aupd could not check. Set it to DUNNO to fail open.
	ErrorAction string `yaml:"error_action"`
	// SendSuspendedAction answers a submission from an authenticated sender
	// who may not send (sending suspended, or a status that denies login).
	SendSuspendedAction string `yaml:"send_suspended_action"`
	// ClosedAction answers mail to a closed account (a permanent bounce).
	ClosedAction string `yaml:"closed_action"`
	// ReceiveSuspendedAction answers mail to an account whose receiving is
	// suspended (a permanent reject).
	ReceiveSuspendedAction string `yaml:"receive_suspended_action"`
	// MaintenanceAction answers mail to an account in maintenance (a
	// temporary failure: the sending MTA queues the mail).
	MaintenanceAction string `yaml:"maintenance_action"`
	// VolumeThrottleAction answers an authenticated sender that a volume
	// throttle holds back (a temporary failure: the mail client tries
	// again later).
	VolumeThrottleAction string `yaml:"volume_throttle_action"`
	// RecipientDelimiter is Postfix's recipient_delimiter: the characters
	// that start an address extension (user+tag@domain). A recipient with
	// an extension is judged by the mailbox it is delivered to as well.
	// Default "+", Debian's; "none" for a Postfix without one.
	RecipientDelimiter string `yaml:"recipient_delimiter"`
	// TransportListen, when set, serves Postfix's transport_maps as a
	// socketmap (transport_maps = socketmap:inet:HOST:PORT:transport): a
	// lookup Postfix's queue manager makes for every recipient of every
	// message, after alias expansion and whatever way the mail came in
	// (SMTP, sendmail, forwards), answering error:5.2.1 or retry:4.2.1 for
	// mailboxes that may not receive. Default off.
	TransportListen string `yaml:"transport_listen"`
}

// delimiters returns the extension delimiters, "" for none.
func (c Config) delimiters() string {
	if c.RecipientDelimiter == "none" {
		return ""
	}
	return c.RecipientDelimiter
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		Listen:                 "127.0.0.1:10040",
		UnixSocketMode:         0o660,
		MaxConnections:         1000,
		IdleTimeout:            10 * time.Minute,
		RequestTimeout:         30 * time.Second,
		LookupTimeout:          2 * time.Second,
		MaxLineBytes:           4096,
		MaxRequestBytes:        64 << 10,
		MaxAttributes:          128,
		ErrorAction:            "DEFER_IF_PERMIT Service temporarily unavailable",
		SendSuspendedAction:    "554 5.7.1 Sending is suspended for this account",
		ClosedAction:           "550 5.2.1 Mailbox is closed",
		ReceiveSuspendedAction: "550 5.2.1 Mailbox is not accepting messages",
		MaintenanceAction:      "450 4.2.1 Mailbox is temporarily unavailable, try again later",
		VolumeThrottleAction:   "452 4.7.1 Sending limit reached for this account, try again later",
		RecipientDelimiter:     "+",
	}
}

// withDefaults fills the zero fields of c from Defaults.
func (c Config) withDefaults() Config {
	d := Defaults()
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.UnixSocketMode == 0 {
		c.UnixSocketMode = d.UnixSocketMode
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = d.MaxConnections
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = d.LookupTimeout
	}
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = d.MaxLineBytes
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	if c.MaxAttributes == 0 {
		c.MaxAttributes = d.MaxAttributes
	}
	if c.RecipientDelimiter == "" {
		c.RecipientDelimiter = d.RecipientDelimiter
	}
	for _, p := range []struct {
		v *string
		d string
	}{
		{&c.ErrorAction, d.ErrorAction},
		{&c.SendSuspendedAction, d.SendSuspendedAction},
		{&c.ClosedAction, d.ClosedAction},
		{&c.ReceiveSuspendedAction, d.ReceiveSuspendedAction},
		{&c.MaintenanceAction, d.MaintenanceAction},
		{&c.VolumeThrottleAction, d.VolumeThrottleAction},
	} {
		if *p.v == "" {
			*p.v = p.d
		}
	}
	return c
}

// Validate reports the first invalid setting. It is called on the
// configuration with defaults applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("postfix policy: listen %q: %w", c.Listen, err)
	}
	if c.TransportListen != "" {
		if _, _, err := net.SplitHostPort(c.TransportListen); err != nil {
			return fmt.Errorf("postfix policy: transport_listen %q: %w", c.TransportListen, err)
		}
	}
	if d := c.delimiters(); strings.ContainsAny(d, "@\"\\ \t\r\n") || len(d) > 8 {
		return fmt.Errorf("postfix policy: recipient_delimiter %q: up to 8 characters, not @, quotes, backslashes or spaces (\"none\" for none)", c.RecipientDelimiter)
	}
	if c.UnixSocketMode > 0o777 {
		return fmt.Errorf("postfix policy: unix_socket_mode %o is not a permission", c.UnixSocketMode)
	}
	for _, x := range []struct {
		name string
		v    int
	}{
		{"max_connections", c.MaxConnections},
		{"max_line_bytes", c.MaxLineBytes},
		{"max_request_bytes", c.MaxRequestBytes},
		{"max_attributes", c.MaxAttributes},
	} {
		if x.v < 0 {
			return fmt.Errorf("postfix policy: %s must be positive, got %d", x.name, x.v)
		}
	}
	if c.MaxLineBytes < 256 {
		return fmt.Errorf("postfix policy: max_line_bytes must be at least 256, got %d", c.MaxLineBytes)
	}
	if c.MaxRequestBytes < c.MaxLineBytes {
		return errors.New("postfix policy: max_request_bytes must be at least max_line_bytes")
	}
	for _, x := range []struct {
		name string
		v    time.Duration
	}{
		{"idle_timeout", c.IdleTimeout},
		{"request_timeout", c.RequestTimeout},
		{"lookup_timeout", c.LookupTimeout},
	} {
		if x.v < 0 {
			return fmt.Errorf("postfix policy: %s must be positive, got %s", x.name, x.v)
		}
	}
	for _, x := range []struct{ name, v string }{
		{"error_action", c.ErrorAction},
		{"send_suspended_action", c.SendSuspendedAction},
		{"closed_action", c.ClosedAction},
		{"receive_suspended_action", c.ReceiveSuspendedAction},
		{"maintenance_action", c.MaintenanceAction},
		{"volume_throttle_action", c.VolumeThrottleAction},
	} {
		if err := validAction(x.v); err != nil {
			return fmt.Errorf("postfix policy: %s: %w", x.name, err)
		}
	}
	if err := wantClass(c.SendSuspendedAction, '5'); err != nil {
		return fmt.Errorf("postfix policy: send_suspended_action: %w", err)
	}
	if err := wantClass(c.ClosedAction, '5'); err != nil {
		return fmt.Errorf("postfix policy: closed_action: %w", err)
	}
	if err := wantClass(c.ReceiveSuspendedAction, '5'); err != nil {
		return fmt.Errorf("postfix policy: receive_suspended_action: %w", err)
	}
	if err := wantClass(c.MaintenanceAction, '4'); err != nil {
		return fmt.Errorf("postfix policy: maintenance_action: %w", err)
	}
	if err := wantClass(c.VolumeThrottleAction, '4'); err != nil {
		return fmt.Errorf("postfix policy: volume_throttle_action: %w", err)
	}
	return nil
}

// validAction checks that a is one line of printable ASCII, as an access(5)
// action must be.
func validAction(a string) error {
	if strings.TrimSpace(a) == "" {
		return errors.New("empty action")
	}
	for i := 0; i < len(a); i++ {
		if a[i] < 0x20 || a[i] > 0x7e {
			return fmt.Errorf("action %q has a byte that is not printable ASCII", a)
		}
	}
	return nil
}

// wantClass checks that a is an "NNN text" action of SMTP reply class c.
func wantClass(a string, c byte) error {
	if len(a) < 4 || a[0] != c || a[1] < '0' || a[1] > '9' || a[2] < '0' || a[2] > '9' || a[3] != ' ' {
		return fmt.Errorf("action %q must start with a %cNN reply code", a, c)
	}
	return nil
}
