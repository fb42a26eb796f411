package postfix

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/rules"
)

// fakeAccounts is an in-memory Accounts. It governs the domains in local
// and every address it holds a view of, as the store does.
type fakeAccounts struct {
	mu    sync.Mutex
	local map[string]bool
	views map[string]rules.AccountView
	err   error
}

func newFakeAccounts(domains ...string) *fakeAccounts {
	f := &fakeAccounts{local: map[string]bool{}, views: map[string]rules.AccountView{}}
	for _, d := range domains {
		f.local[d] = true
	}
	return f
}

func (f *fakeAccounts) set(acct string, v rules.AccountView) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.views[acct] = v
}

func (f *fakeAccounts) LookupAll(_ context.Context, accts ...string) ([]Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	out := make([]Account, len(accts))
	for i, acct := range accts {
		dom := acct[strings.LastIndexByte(acct, '@')+1:]
		v, known := f.views[acct]
		out[i] = Account{View: v, Governed: f.local[dom] || known}
	}
	return out, nil
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

func newTestServer(t *testing.T, cfg Config, acc Accounts, reg prometheus.Registerer) *Server {
	t.Helper()
	s, err := New(cfg, acc, Options{Now: fixedNow, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func standardAccounts() *fakeAccounts {
	f := newFakeAccounts("example.test", "other.test")
	f.set("plus+closed@example.test", rules.AccountView{Type: rules.TypeMailbox, Status: rules.StatusClosed})
	f.set("active@example.test", rules.AccountView{Type: rules.TypeMailbox, Status: rules.StatusActive})
	f.set("nosend@example.test", rules.AccountView{Type: rules.TypeMailbox, Suspended: []rules.Service{rules.ServiceSend}})
	f.set("locked@example.test", rules.AccountView{Type: rules.TypeMailbox, Status: rules.StatusLocked})
	f.set("closed@example.test", rules.AccountView{Type: rules.TypeMailbox, Status: rules.StatusClosed})
	f.set("maint@example.test", rules.AccountView{Type: rules.TypeMailbox, Status: rules.StatusMaintenance})
	f.set("norecv@example.test", rules.AccountView{Type: rules.TypeMailbox, Suspended: []rules.Service{rules.ServiceReceive}})
	f.set("lockedout@example.test", rules.AccountView{Type: rules.TypeMailbox, Status: rules.StatusLockout, LockoutUntil: t0.Add(time.Hour)})
	f.set("expired@example.test", rules.AccountView{Type: rules.TypeMailbox, Status: rules.StatusLockout, LockoutUntil: t0.Add(-time.Second)})
	f.set("fwd@example.test", rules.AccountView{Type: rules.TypeForward, Suspended: []rules.Service{rules.ServiceReceive}})
	// Records of accounts whose domain is in no company: aupd suspended
	// or closed them, so they are governed all the same.
	f.set("nosend@nocompany.test", rules.AccountView{Type: rules.TypeMailbox, Suspended: []rules.Service{rules.ServiceSend}})
	f.set("closed@nocompany.test", rules.AccountView{Type: rules.TypeMailbox, Status: rules.StatusClosed})
	return f
}

func rcpt(sasl, recipient string) Request {
	return Request{"request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
		"sasl_username": sasl, "recipient": recipient, "sender": "x@elsewhere.test", "client_address": "192.0.2.1"}
}

func TestDecide(t *testing.T) {
	s := newTestServer(t, Config{}, standardAccounts(), nil)
	d := Defaults()
	tests := []struct {
		name   string
		req    Request
		action string
		result string
	}{
		{"inbound to active", rcpt("", "active@example.test"), "DUNNO", ResultDunno},
		{"inbound to closed", rcpt("", "closed@example.test"), d.ClosedAction, ResultClosed},
		{"inbound to closed, mixed case", rcpt("", "Closed@Example.TEST"), d.ClosedAction, ResultClosed},
		{"inbound to maintenance", rcpt("", "maint@example.test"), d.MaintenanceAction, ResultMaintenance},
		{"inbound to receive suspended", rcpt("", "norecv@example.test"), d.ReceiveSuspendedAction, ResultReceiveSuspended},
		{"inbound to forward, receive suspended", rcpt("", "fwd@example.test"), d.ReceiveSuspendedAction, ResultReceiveSuspended},
		{"inbound to locked: delivered", rcpt("", "locked@example.test"), "DUNNO", ResultDunno},
		{"inbound to lockout: delivered", rcpt("", "lockedout@example.test"), "DUNNO", ResultDunno},
		{"inbound to unknown local", rcpt("", "nobody@example.test"), "DUNNO", ResultDunno},
		{"foreign recipient", rcpt("", "closed@elsewhere.test"), "DUNNO", ResultDunno},
		{"bad recipient", rcpt("", "not an address"), "DUNNO", ResultDunno},
		{"submission by active", rcpt("active@example.test", "someone@elsewhere.test"), "DUNNO", ResultDunno},
		{"submission by send suspended", rcpt("nosend@example.test", "someone@elsewhere.test"), d.SendSuspendedAction, ResultSendSuspended},
		{"submission by send suspended, mixed case", rcpt("NoSend@example.test", "someone@elsewhere.test"), d.SendSuspendedAction, ResultSendSuspended},
		{"submission by locked", rcpt("locked@example.test", "someone@elsewhere.test"), d.SendSuspendedAction, ResultSendSuspended},
		{"submission by closed", rcpt("closed@example.test", "someone@elsewhere.test"), d.SendSuspendedAction, ResultSendSuspended},
		{"submission by maintenance", rcpt("maint@example.test", "someone@elsewhere.test"), d.SendSuspendedAction, ResultSendSuspended},
		{"submission by lockout", rcpt("lockedout@example.test", "someone@elsewhere.test"), d.SendSuspendedAction, ResultSendSuspended},
		{"submission after lockout ended", rcpt("expired@example.test", "someone@elsewhere.test"), "DUNNO", ResultDunno},
		{"submission by receive suspended", rcpt("norecv@example.test", "someone@elsewhere.test"), "DUNNO", ResultDunno},
		{"send check wins over recipient", rcpt("nosend@example.test", "closed@example.test"), d.SendSuspendedAction, ResultSendSuspended},
		{"submission to closed local", rcpt("active@example.test", "closed@example.test"), d.ClosedAction, ResultClosed},
		{"sasl name not an address", rcpt("alice", "active@example.test"), "DUNNO", ResultDunno},
		{"foreign sasl user", rcpt("nosend@elsewhere.test", "x@elsewhere.test"), "DUNNO", ResultDunno},
		// A domain outside every company changes who is notified, never
		// whether a suspension holds.
		{"submission by send suspended outside every company", rcpt("nosend@nocompany.test", "x@elsewhere.test"), d.SendSuspendedAction, ResultSendSuspended},
		{"end of message, send suspended outside every company",
			Request{"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE", "sasl_username": "NoSend@NoCompany.test"},
			d.SendSuspendedAction, ResultSendSuspended},
		{"inbound to closed outside every company", rcpt("", "closed+x@nocompany.test"), d.ClosedAction, ResultClosed},
		{"unknown address outside every company", rcpt("someone@nocompany.test", "other@nocompany.test"), "DUNNO", ResultDunno},
		{"end of message, send suspended",
			Request{"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE", "sasl_username": "nosend@example.test"},
			d.SendSuspendedAction, ResultSendSuspended},
		{"data with one closed recipient is not re-judged",
			Request{"request": "smtpd_access_policy", "protocol_state": "DATA", "recipient": "closed@example.test"}, "DUNNO", ResultDunno},
		{"connect with sasl", Request{"request": "smtpd_access_policy", "protocol_state": "CONNECT", "sasl_username": "nosend@example.test"}, "DUNNO", ResultDunno},
		{"other request type", Request{"request": "junk", "protocol_state": "RCPT", "recipient": "closed@example.test"}, "DUNNO", ResultDunno},
		{"empty request", Request{}, "DUNNO", ResultDunno},
		// Address extensions (recipient_delimiter "+") reach the mailbox.
		{"+tag to closed", rcpt("", "closed+tag@example.test"), d.ClosedAction, ResultClosed},
		{"+tag to closed, upper case", rcpt("", "CLOSED+Tag@EXAMPLE.test"), d.ClosedAction, ResultClosed},
		{"+tag to maintenance", rcpt("", "maint+x@example.test"), d.MaintenanceAction, ResultMaintenance},
		{"+tag to receive suspended", rcpt("", "norecv+a+b@example.test"), d.ReceiveSuspendedAction, ResultReceiveSuspended},
		{"+tag to active", rcpt("", "active+news@example.test"), "DUNNO", ResultDunno},
		{"a mailbox named with the delimiter keeps its state", rcpt("", "plus+closed@example.test"), d.ClosedAction, ResultClosed},
		{"leading delimiter is no extension", rcpt("", "+closed@example.test"), "DUNNO", ResultDunno},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			action, result := s.Decide(context.Background(), tt.req)
			if action != tt.action || result != tt.result {
				t.Errorf("Decide = %q, %q; want %q, %q", action, result, tt.action, tt.result)
			}
		})
	}
}

func TestDecideLookupError(t *testing.T) {
	acc := standardAccounts()
	acc.err = errors.New("redis down")
	s := newTestServer(t, Config{}, acc, nil)
	for _, req := range []Request{rcpt("", "active@example.test"), rcpt("active@example.test", "x@elsewhere.test")} {
		action, result := s.Decide(context.Background(), req)
		if action != Defaults().ErrorAction || result != ResultError {
			t.Errorf("Decide = %q, %q; want the error action", action, result)
		}
	}
	s = newTestServer(t, Config{ErrorAction: "DUNNO"}, acc, nil)
	if action, _ := s.Decide(context.Background(), rcpt("", "active@example.test")); action != "DUNNO" {
		t.Errorf("with error_action DUNNO: %q", action)
	}
}

// startServer serves s on a loopback port until the test ends.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

// ask sends a request and returns the action of the reply, checking that
// the reply is one action line and an empty line.
func (c *client) ask(attrs ...string) string {
	c.t.Helper()
	var b strings.Builder
	for _, a := range attrs {
		b.WriteString(a + "\n")
	}
	b.WriteString("\n")
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

func (c *client) reply() string {
	c.t.Helper()
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	empty, err := c.r.ReadString('\n')
	if err != nil || empty != "\n" {
		c.t.Fatalf("reply not ended by an empty line: %q, %v", empty, err)
	}
	action, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "action=")
	if !ok {
		c.t.Fatalf("reply %q is not action=...", line)
	}
	return action
}

func TestProtocolPersistentConnection(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newTestServer(t, Config{}, standardAccounts(), reg)
	c := dial(t, startServer(t, s))
	d := Defaults()
	// A full request as Postfix 3.x sends it, with attributes aupd ignores.
	full := []string{
		"request=smtpd_access_policy", "protocol_state=RCPT", "protocol_name=ESMTP",
		"client_address=192.0.2.7", "client_name=mx.elsewhere.test", "client_port=40000",
		"reverse_client_name=mx.elsewhere.test", "server_address=127.0.0.1", "server_port=25",
		"helo_name=mx.elsewhere.test", "sender=a@elsewhere.test", "recipient=closed@example.test",
		"recipient_count=0", "queue_id=", "instance=123.456.7", "size=0", "etrn_domain=",
		"stress=", "sasl_method=", "sasl_username=", "sasl_sender=", "ccert_subject=",
		"ccert_issuer=", "ccert_fingerprint=", "ccert_pubkey_fingerprint=", "encryption_protocol=",
		"encryption_cipher=", "encryption_keysize=0", "policy_context=", "compatibility_level=3.6",
		"mail_version=3.7.11", "some_future_attribute=with=equals",
	}
	if got := c.ask(full...); got != d.ClosedAction {
		t.Errorf("closed: %q", got)
	}
	// Same connection, many more requests.
	for i := 0; i < 3; i++ {
		if got := c.ask("request=smtpd_access_policy", "protocol_state=RCPT", "recipient=maint@example.test"); got != d.MaintenanceAction {
			t.Errorf("maintenance: %q", got)
		}
		if got := c.ask("request=smtpd_access_policy", "protocol_state=RCPT", "sasl_username=nosend@example.test", "recipient=a@elsewhere.test"); got != d.SendSuspendedAction {
			t.Errorf("send suspended: %q", got)
		}
		if got := c.ask("request=smtpd_access_policy", "protocol_state=RCPT", "recipient=active@example.test"); got != "DUNNO" {
			t.Errorf("active: %q", got)
		}
	}
	// CRLF line ends (a human with telnet) work too.
	if _, err := io.WriteString(c.conn, "request=smtpd_access_policy\r\nprotocol_state=RCPT\r\nrecipient=closed@example.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if got := c.reply(); got != d.ClosedAction {
		t.Errorf("CRLF: %q", got)
	}
	if got := counterValue(t, s.metrics.requests.WithLabelValues("postfix", ResultClosed)); got != 2 {
		t.Errorf("closed requests metric = %v, want 2", got)
	}
	if got := counterValue(t, s.metrics.requests.WithLabelValues("postfix", ResultDunno)); got != 3 {
		t.Errorf("dunno requests metric = %v, want 3", got)
	}
	if n := histogramCount(t, reg, "aupd_policy_request_duration_seconds"); n != 11 {
		t.Errorf("latency histogram counted %d requests, want 11", n)
	}
}

func TestProtocolPipelinedRequests(t *testing.T) {
	s := newTestServer(t, Config{}, standardAccounts(), nil)
	c := dial(t, startServer(t, s))
	// Two requests in one write: both answered, in order.
	if _, err := io.WriteString(c.conn, "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=closed@example.test\n\n"+
		"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=active@example.test\n\n"); err != nil {
		t.Fatal(err)
	}
	if got := c.reply(); got != Defaults().ClosedAction {
		t.Errorf("first: %q", got)
	}
	if got := c.reply(); got != "DUNNO" {
		t.Errorf("second: %q", got)
	}
}

// expectClosed reads until EOF and returns everything read.
func (c *client) expectClosed() string {
	c.t.Helper()
	b, err := io.ReadAll(c.r)
	if err != nil {
		c.t.Fatalf("expected the server to close the connection: %v", err)
	}
	return string(b)
}

func TestProtocolLimits(t *testing.T) {
	cfg := Config{MaxLineBytes: 300, MaxRequestBytes: 1000, MaxAttributes: 5}
	s := newTestServer(t, cfg, standardAccounts(), nil)
	addr := startServer(t, s)
	errReply := "action=" + Defaults().ErrorAction + "\n\n"
	tests := []struct {
		name  string
		input string
	}{
		{"long line", "request=smtpd_access_policy\nsender=" + strings.Repeat("a", 400) + "\n\n"},
		{"long line without newline", strings.Repeat("a", 5000)},
		{"large request", strings.Repeat("x=1\n", 4) + strings.Repeat("y="+strings.Repeat("b", 250)+"\n", 5) + "\n"},
		{"too many attributes", "a=1\nb=2\nc=3\nd=4\ne=5\nf=6\n\n"},
		{"not name=value", "request=smtpd_access_policy\nHELO there\n\n"},
		{"empty name", "=value\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			go io.WriteString(c.conn, tt.input) //nolint:errcheck // the server may close first
			if got := c.expectClosed(); got != errReply {
				t.Errorf("got %q, want one error reply then close", got)
			}
		})
	}
	// Repeating an attribute does not count twice toward the limit.
	c := dial(t, addr)
	if got := c.ask("request=smtpd_access_policy", "protocol_state=RCPT", "recipient=x@example.test", "recipient=closed@example.test", "recipient=closed@example.test", "recipient=closed@example.test"); got != Defaults().ClosedAction {
		t.Errorf("repeated attribute: %q (last value wins)", got)
	}
}

func TestProtocolIdleTimeout(t *testing.T) {
	s := newTestServer(t, Config{IdleTimeout: 50 * time.Millisecond}, standardAccounts(), nil)
	c := dial(t, startServer(t, s))
	if got := c.ask("request=smtpd_access_policy"); got != "DUNNO" {
		t.Fatalf("%q", got)
	}
	// The server closes the idle connection without a reply.
	if got := c.expectClosed(); got != "" {
		t.Errorf("idle close sent %q", got)
	}
}

func TestProtocolPartialRequestTimeout(t *testing.T) {
	s := newTestServer(t, Config{RequestTimeout: 50 * time.Millisecond}, standardAccounts(), nil)
	c := dial(t, startServer(t, s))
	if _, err := io.WriteString(c.conn, "request=smtpd_access_policy\n"); err != nil {
		t.Fatal(err)
	}
	if got := c.expectClosed(); got != "" {
		t.Errorf("a stalled request got %q", got)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	s := newTestServer(t, Config{MaxConnections: 1}, standardAccounts(), nil)
	addr := startServer(t, s)
	first := dial(t, addr)
	if got := first.ask("request=smtpd_access_policy"); got != "DUNNO" {
		t.Fatal(got)
	}
	// A second connection beyond max_connections is closed at once, not
	// left waiting.
	second := dial(t, addr)
	_ = second.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := second.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("second connection beyond max_connections: %v; want it closed (EOF)", err)
	}
	// Once the first closes, a new one is served.
	first.conn.Close()
	waitUntil(t, func() bool {
		c := dial(t, addr)
		defer c.conn.Close()
		if _, err := io.WriteString(c.conn, "request=smtpd_access_policy\n\n"); err != nil {
			return false
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := c.r.ReadString('\n')
		return err == nil && line == "action=DUNNO\n"
	})
}

// waitUntil polls cond for up to 10s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

func TestServeShutdownClosesConnections(t *testing.T) {
	s := newTestServer(t, Config{}, standardAccounts(), nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := dial(t, ln.Addr().String())
	if got := c.ask("request=smtpd_access_policy"); got != "DUNNO" {
		t.Fatal(got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if got := c.expectClosed(); got != "" {
		t.Errorf("got %q at shutdown", got)
	}
}

func TestRunUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := dir + "/policy.sock"
	s := newTestServer(t, Config{Listen: "127.0.0.1:0", UnixSocket: sock}, standardAccounts(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var conn net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unix socket never came up: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // poll
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	if got := c.ask("request=smtpd_access_policy", "protocol_state=RCPT", "recipient=closed@example.test"); got != Defaults().ClosedAction {
		t.Errorf("%q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := []Config{
		{Listen: "nope"},
		{MaintenanceAction: "550 5.2.1 permanent"},
		{ClosedAction: "450 4.2.1 temporary"},
		{SendSuspendedAction: "REJECT"},
		{ErrorAction: "DUNNO\nX"},
		{MaxLineBytes: 10},
		{MaxLineBytes: 4096, MaxRequestBytes: 1000},
		{IdleTimeout: -time.Second},
		{TransportListen: "nope"},
		{RecipientDelimiter: "@"},
		{RecipientDelimiter: "+ "},
	}
	for _, c := range []Config{{RecipientDelimiter: "none"}, {RecipientDelimiter: "+-"}, {TransportListen: "127.0.0.1:10042"}} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestFormatReply(t *testing.T) {
	if got := string(formatReply("554 5.7.1 a\nb\x00c")); got != "action=554 5.7.1 a b c\n\n" {
		t.Errorf("%q", got)
	}
	if !bytes.HasSuffix(formatReply("DUNNO"), []byte("\n\n")) {
		t.Error("no empty line")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

func TestConfigYAML(t *testing.T) {
	const doc = `
listen: 127.0.0.1:20040
unix_socket: /run/aupd/policy.sock
unix_socket_mode: 0660
idle_timeout: 5m
lookup_timeout: 1500ms
error_action: DUNNO
`
	cfg := Defaults()
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.IdleTimeout != 5*time.Minute || cfg.LookupTimeout != 1500*time.Millisecond || cfg.UnixSocketMode != 0o660 ||
		cfg.ErrorAction != "DUNNO" || cfg.MaxConnections != Defaults().MaxConnections {
		t.Errorf("decoded %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
	dec = yaml.NewDecoder(strings.NewReader("listne: x\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil {
		t.Error("unknown key accepted")
	}
}

// BenchmarkRequest measures one request and reply over a persistent TCP
// connection, as Postfix sends them (one per recipient).
func BenchmarkRequest(b *testing.B) {
	s, err := New(Config{}, standardAccounts(), Options{Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	req := []byte("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.1\n" +
		"sender=a@elsewhere.test\nrecipient=maint@example.test\nsasl_username=active@example.test\n\n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
	}
}
