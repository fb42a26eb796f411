package notifier

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		<-time.After(10 * time.Millisecond)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testRedis returns a client of the test Redis and a key prefix unique to
// the test; every key under it is deleted at the end.
func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	addr := os.Getenv("AUPD_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
	}
	prefix := "aupdtest-" + randHex(6)
	t.Cleanup(func() {
		iter := rdb.Scan(ctx, 0, prefix+":*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}

// testJetStream starts an in-process nats-server with JetStream and
// creates the account and verdict streams.
func testJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, subj := range map[string]string{"AUP_ACCOUNTS": "aup.account.>", "AUP_VERDICTS": "aup.verdict.>"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}}); err != nil {
			t.Fatal(err)
		}
	}
	return js
}

// delivered is one message the SMTP server accepted.
type delivered struct {
	from string
	to   []string
	data []byte
}

// smtpServer is an in-process go-smtp server that records what it
// accepts. Hooks decide the reply to RCPT and DATA by call number.
type smtpServer struct {
	addr string
	srv  *smtp.Server

	mu       sync.Mutex
	msgs     []delivered
	rcpts    int
	datas    int
	onRcpt   func(n int) error
	onData   func(n int) error
	gate     chan struct{} // when set, DATA waits for it to close
	authUser string
	authPass string
	authOK   int
}

type smtpOpts struct {
	tlsMode  string // none, starttls, tls
	addr     string // default 127.0.0.1:0
	user     string
	password string
	onRcpt   func(n int) error
	onData   func(n int) error
	gate     chan struct{}
}

func startSMTP(t *testing.T, o smtpOpts) *smtpServer {
	t.Helper()
	s := &smtpServer{onRcpt: o.onRcpt, onData: o.onData, gate: o.gate, authUser: o.user, authPass: o.password}
	srv := smtp.NewServer(backend{s})
	srv.Domain = "relay.test"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.MaxMessageBytes = 4 << 20
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	switch o.tlsMode {
	case TLSStartTLS:
		srv.TLSConfig = selfSigned(t)
	case TLSImplicit:
		l = tls.NewListener(l, selfSigned(t))
	}
	s.addr = l.Addr().String()
	s.srv = srv
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *smtpServer) port(t *testing.T) int {
	_, p, _ := net.SplitHostPort(s.addr)
	var n int
	if _, err := fmt.Sscan(p, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *smtpServer) messages() []delivered {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]delivered(nil), s.msgs...)
}

func (s *smtpServer) counts() (rcpts, datas int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rcpts, s.datas
}

type backend struct{ s *smtpServer }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{s: b.s}, nil }

type session struct {
	s    *smtpServer
	from string
	to   []string
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.authUser == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != ss.s.authUser || pass != ss.s.authPass {
			return errors.New("invalid credentials")
		}
		ss.s.mu.Lock()
		ss.s.authOK++
		ss.s.mu.Unlock()
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error { ss.from = from; return nil }

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	ss.s.rcpts++
	n, hook := ss.s.rcpts, ss.s.onRcpt
	ss.s.mu.Unlock()
	if hook != nil {
		if err := hook(n); err != nil {
			return err
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.datas++
	n, hook, gate := ss.s.datas, ss.s.onData, ss.s.gate
	ss.s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if hook != nil {
		if err := hook(n); err != nil {
			return err
		}
	}
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, delivered{from: ss.from, to: append([]string(nil), ss.to...), data: b})
	ss.s.mu.Unlock()
	return nil
}

func (ss *session) Reset()        { ss.from, ss.to = "", nil }
func (ss *session) Logout() error { return nil }

func smtpErr(code int, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: msg}
}

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"relay.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// fakeDirectory is a Directory over a map.
type fakeDirectory map[string]Company

func (d fakeDirectory) Company(id string) (Company, bool) { c, ok := d[id]; return c, ok }

// testConfig is a valid config for a plain SMTP server at port.
func testConfig(port int) Config {
	cfg := Defaults()
	cfg.SMTP.Host = "127.0.0.1"
	cfg.SMTP.Port = port
	cfg.SMTP.TLS = TLSNone
	cfg.SMTP.Timeout = 2 * time.Second
	cfg.From = "AUP Desk <abuse-desk@provider.test>"
	cfg.ReplyTo = "abuse@provider.test"
	cfg.FallbackAbuseContact = "fallback-abuse@provider.test"
	cfg.ProviderName = "Provider Mail"
	cfg.APIURL = "https://aupd.provider.test"
	cfg.RetryMin = 20 * time.Millisecond
	cfg.RetryMax = 100 * time.Millisecond
	cfg.AckWait = 2 * time.Second
	cfg.Durable = "notifier-" + randHex(4)
	return cfg
}

// env is one test's world: Redis, JetStream, and the notifiers started.
type env struct {
	t      *testing.T
	rdb    *redis.Client
	prefix string
	js     jetstream.JetStream
	dir    fakeDirectory
}

func newEnv(t *testing.T) *env {
	rdb, prefix := testRedis(t)
	return &env{t: t, rdb: rdb, prefix: prefix, js: testJetStream(t), dir: fakeDirectory{
		"example":   {Name: "Example Ltd", AbuseContact: "Abuse Team <abuse@example.com>"},
		"nocontact": {Name: "No Contact GmbH"},
	}}
}

// start builds a notifier with cfg and runs it until the test ends.
func (e *env) start(cfg Config, reg prometheus.Registerer) *Notifier {
	t := e.t
	t.Helper()
	stream, err := e.js.Stream(context.Background(), "AUP_VERDICTS")
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, Options{
		Redis: e.rdb, KeyPrefix: e.prefix, JetStream: e.js, Samples: StreamSamples{Stream: stream},
		Directory: e.dir, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return n
}

// publishVerdict stores a verdict in the verdict stream and returns its
// sequence number.
func (e *env) publishVerdict(v *events.Verdict) uint64 {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	ack, err := e.js.Publish(context.Background(), "aup.verdict."+string(v.Direction), b)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

func (e *env) publishEvent(ev *events.AccountEvent) {
	e.t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), events.AccountSubjectPrefix+ev.Type, b,
		jetstream.WithMsgID(ev.ID)); err != nil {
		e.t.Fatal(err)
	}
}

// settled reports whether the durable consumer has nothing pending or
// unacknowledged.
func (e *env) settled(durable string) bool {
	c, err := e.js.Consumer(context.Background(), "AUP_ACCOUNTS", durable)
	if err != nil {
		return false
	}
	info, err := c.Info(context.Background())
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer > 0
}

// delivered is how many times the durable consumer delivered messages.
func (e *env) delivered(durable string) uint64 {
	c, err := e.js.Consumer(context.Background(), "AUP_ACCOUNTS", durable)
	if err != nil {
		return 0
	}
	info, err := c.Info(context.Background())
	if err != nil {
		return 0
	}
	return info.Delivered.Consumer
}

func (e *env) delivery(n *Notifier, account, id string) Delivery {
	d, err := n.Store().Delivery(context.Background(), account, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		e.t.Fatal(err)
	}
	return d
}

// counter returns the value of aupd_notices_total{result}.
func counter(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	return labelled(t, reg, "aupd_notices_total", "result", result)
}

// labelled returns the value of the counter name{label="value"}.
func labelled(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func score(f float64) *float64 { return &f }

// testVerdict is a spam verdict with a message.
func testVerdict(id string, at time.Time, subject, body string) *events.Verdict {
	return &events.Verdict{
		ID: id, Time: at, Direction: "outbound", Account: "alice@example.com", Verdict: "spam",
		Score: score(14.2), Source: "outbound-filter-1",
		Message: &events.Message{
			MessageID: "<" + id + "@example.com>", From: "alice@example.com", To: []string{"bob@example.net"},
			Subject: subject, Date: at.Format(time.RFC1123Z),
			Raw: "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: " + subject + "\r\n\r\n" + body + "\r\n",
		},
	}
}

// testSuspension is an AUP suspension event of account.
func testSuspension(account, company string, at time.Time, samples []uint64) *events.AccountEvent {
	return &events.AccountEvent{
		ID: "ev-" + randHex(6), Type: events.TypeSuspended, Time: at, Account: account, Company: company,
		Actor: "aupd", Reason: "aup_violation",
		Suspension: &events.AUPSuspension{
			ID: "susp-" + randHex(6), Action: "suspend", Services: []string{"send", "webmail_send"},
			Threshold: 10, Count: 12, Counts: map[string]int{"outbound": 9, "inbound": 1, "complaint": 2},
			WindowStart: at.Add(-24 * time.Hour), WindowEnd: at, Samples: samples,
		},
	}
}

// parsedNotice is a notice parsed back from its bytes.
type parsedNotice struct {
	header      mail.Header
	body        string
	attachments []attachment
}

type attachment struct {
	name, contentType, disposition string
	data                           []byte
}

// parseNotice parses a delivered notice: a multipart/mixed message.
func parseNotice(raw []byte) (*parsedNotice, error) {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("content-type: %w", err)
	}
	if mt != "multipart/mixed" {
		return nil, fmt.Errorf("content-type is %s", mt)
	}
	p := &parsedNotice{header: m.Header}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for i := 0; ; i++ {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", i, err)
		}
		var r io.Reader = part
		switch strings.ToLower(part.Header.Get("Content-Transfer-Encoding")) {
		case "base64":
			r = base64.NewDecoder(base64.StdEncoding, part)
		case "quoted-printable":
			r = quotedprintable.NewReader(part)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", i, err)
		}
		disp, dparams, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
		if disp == "attachment" {
			p.attachments = append(p.attachments, attachment{
				name: dparams["filename"], contentType: part.Header.Get("Content-Type"), disposition: disp, data: data,
			})
			continue
		}
		if p.body != "" {
			return nil, fmt.Errorf("part %d: a second body part", i)
		}
		p.body = string(data)
	}
	return p, nil
}
