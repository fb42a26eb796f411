package notifier

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/events"
)

const waitLong = 20 * time.Second

// TestSendsOneNotice runs the whole path: verdicts in the verdict stream,
// a suspension event (after events that must not produce notices), one
// email at the company's abuse contact, parsed back and checked, and its
// state and evidence readable through the Store.
func TestSendsOneNotice(t *testing.T) {
	e := newEnv(t)
	srv := startSMTP(t, smtpOpts{})
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.port(t))
	n := e.start(cfg, reg)

	at := time.Now().UTC().Truncate(time.Second)
	var seqs []uint64
	for i, subj := range []string{"Cheap meds", "Cheap meds", "Your invoice", "Win a prize"} {
		body := "Buy now"
		if subj != "Cheap meds" {
			body = subj + " body"
		}
		seqs = append(seqs, e.publishVerdict(testVerdict("v"+randHex(4), at.Add(time.Duration(i)*time.Minute), subj, body)))
	}
	// Not notices: a reinstatement, a report (shadow mode), an admin
	// suspension.
	other := testSuspension("bob@example.com", "example", at, nil)
	other.Type = events.TypeReinstated
	e.publishEvent(other)
	report := testSuspension("carol@example.com", "example", at, nil)
	report.Suspension.Action = "report"
	report.Type = events.TypeReported
	e.publishEvent(report)
	admin := testSuspension("dave@example.com", "example", at, nil)
	admin.Reason = "admin"
	e.publishEvent(admin)

	ev := testSuspension("alice@example.com", "example", at, append(seqs[1:], 9999))
	e.publishEvent(ev)
	e.publishEvent(ev) // a republish: deduplicated by JetStream or by the notice's key

	waitFor(t, waitLong, "notice sent", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateSent })
	waitFor(t, waitLong, "consumer settled", func() bool { return e.settled(cfg.Durable) })

	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(msgs))
	}
	m := msgs[0]
	if len(m.to) != 1 || m.to[0] != "abuse@example.com" || m.from != "abuse-desk@provider.test" {
		t.Errorf("envelope from %q to %q", m.from, m.to)
	}
	ev2, err := n.Store().Evidence(context.Background(), ev.Account, ev.Suspension.ID)
	if err != nil {
		t.Fatal(err)
	}
	p := checkNotice(t, m.data, ev2, "abuse@example.com")
	if got := p.header.Get("Reply-To"); !strings.Contains(got, "abuse@provider.test") {
		t.Errorf("Reply-To %q", got)
	}
	if got := p.header.Get("Subject"); !strings.HasPrefix(got, "[AUP] ") || !strings.Contains(got, "alice@example.com") {
		t.Errorf("Subject %q", got)
	}
	d := e.delivery(n, ev.Account, ev.Suspension.ID)
	if d.MessageID != p.header.Get("Message-Id") || d.Attempts != 1 || d.Recipient != "abuse@example.com" ||
		!strings.HasPrefix(d.SMTPReply, "250") || d.SentAt.IsZero() {
		t.Errorf("delivery %+v", d)
	}
	evidence := string(p.attachments[0].data)
	for _, want := range []string{"Your invoice", "Win a prize", "Cheap meds", "1 of the 4 sample messages", "3 shown below"} {
		if !strings.Contains(evidence, want) {
			t.Errorf("evidence lacks %q:\n%s", want, evidence)
		}
	}
	for _, want := range []string{"aupctl reinstate alice@example.com --reason",
		"curl -X POST 'https://aupd.provider.test/api/v1/accounts/alice@example.com/reinstate'",
		`{"services":["send","webmail_send"],"reason":`, "Bearer", "antivirus", "password"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("body lacks %q", want)
		}
	}
	if ttl := e.rdb.PTTL(context.Background(), n.store.key(ev.Account, ev.Suspension.ID)).Val(); ttl < cfg.Retention-time.Hour {
		t.Errorf("retention TTL %s", ttl)
	}
	if got := counter(t, reg, "sent"); got != 1 {
		t.Errorf("sent counter %v", got)
	}
}

// TestFallbackContact: a company without an abuse contact, and an unknown
// company, get the provider-wide address.
func TestFallbackContact(t *testing.T) {
	e := newEnv(t)
	srv := startSMTP(t, smtpOpts{})
	cfg := testConfig(srv.port(t))
	n := e.start(cfg, nil)
	a := testSuspension("x@nocontact.example", "nocontact", time.Now(), nil)
	b := testSuspension("y@unknown.example", "unknown", time.Now(), nil)
	e.publishEvent(a)
	e.publishEvent(b)
	waitFor(t, waitLong, "two notices", func() bool {
		return e.delivery(n, a.Account, a.Suspension.ID).State == StateSent && e.delivery(n, b.Account, b.Suspension.ID).State == StateSent
	})
	for _, m := range srv.messages() {
		p := checkNotice(t, m.data, nil, "fallback-abuse@provider.test")
		if !strings.Contains(string(p.attachments[0].data), "No sample messages were recorded") {
			t.Errorf("evidence does not say there are no samples")
		}
	}
}

// TestTemporaryThenSuccess: a 4xx at the end of DATA, then success, gives
// exactly one message, with the same Message-ID as the first attempt.
func TestTemporaryThenSuccess(t *testing.T) {
	e := newEnv(t)
	srv := startSMTP(t, smtpOpts{onData: func(n int) error {
		if n == 1 {
			return smtpErr(451, "try again later")
		}
		return nil
	}})
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.port(t))
	n := e.start(cfg, reg)
	ev := testSuspension("alice@example.com", "example", time.Now(), nil)
	e.publishEvent(ev)
	waitFor(t, waitLong, "sent", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateSent })
	waitFor(t, waitLong, "consumer settled", func() bool { return e.settled(cfg.Durable) })
	if got := len(srv.messages()); got != 1 {
		t.Fatalf("%d messages, want 1", got)
	}
	d := e.delivery(n, ev.Account, ev.Suspension.ID)
	if d.Attempts != 2 || !strings.Contains(d.LastError, "451") {
		t.Errorf("delivery %+v", d)
	}
	if _, datas := srv.counts(); datas != 2 {
		t.Errorf("%d DATA transactions, want 2", datas)
	}
	if counter(t, reg, "retry") != 1 || counter(t, reg, "sent") != 1 {
		t.Errorf("retry %v sent %v", counter(t, reg, "retry"), counter(t, reg, "sent"))
	}
}

// TestPermanentFailure: a 5xx to RCPT marks the notice failed at once,
// without retrying, and lists it among the failed notices.
func TestPermanentFailure(t *testing.T) {
	e := newEnv(t)
	srv := startSMTP(t, smtpOpts{onRcpt: func(int) error { return smtpErr(550, "no such user") }})
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.port(t))
	n := e.start(cfg, reg)
	ev := testSuspension("alice@example.com", "example", time.Now(), nil)
	e.publishEvent(ev)
	waitFor(t, waitLong, "failed", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateFailed })
	waitFor(t, waitLong, "consumer settled", func() bool { return e.settled(cfg.Durable) })
	if rcpts, _ := srv.counts(); rcpts != 1 {
		t.Errorf("%d RCPT commands, want 1 (no retries)", rcpts)
	}
	d := e.delivery(n, ev.Account, ev.Suspension.ID)
	if d.Attempts != 1 || !strings.Contains(d.LastError, "550") || d.FailedAt.IsZero() {
		t.Errorf("delivery %+v", d)
	}
	if got := counter(t, reg, "failed"); got != 1 {
		t.Errorf("failed counter %v", got)
	}
	failed, err := n.Store().Failed(context.Background(), 10)
	if err != nil || len(failed) != 1 || failed[0].SuspensionID != ev.Suspension.ID {
		t.Errorf("Failed() = %+v, %v", failed, err)
	}
	if ev, err := n.Store().Evidence(context.Background(), ev.Account, ev.Suspension.ID); err != nil || len(ev) == 0 {
		t.Errorf("evidence of a failed notice not kept: %v", err)
	}
}

// TestGiveUp: temporary failures are retried until give_up_after, then
// the notice is failed.
func TestGiveUp(t *testing.T) {
	e := newEnv(t)
	srv := startSMTP(t, smtpOpts{onRcpt: func(int) error { return smtpErr(421, "overloaded") }})
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.port(t))
	cfg.GiveUpAfter = 300 * time.Millisecond
	n := e.start(cfg, reg)
	ev := testSuspension("alice@example.com", "example", time.Now(), nil)
	e.publishEvent(ev)
	waitFor(t, waitLong, "failed", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateFailed })
	d := e.delivery(n, ev.Account, ev.Suspension.ID)
	if d.Attempts < 2 || !strings.Contains(d.LastError, "gave up after") || !strings.Contains(d.LastError, "421") {
		t.Errorf("delivery %+v", d)
	}
	waitFor(t, waitLong, "consumer settled", func() bool { return e.settled(cfg.Durable) })
	if len(srv.messages()) != 0 || counter(t, reg, "failed") != 1 {
		t.Errorf("messages %d, failed counter %v", len(srv.messages()), counter(t, reg, "failed"))
	}
}

// TestServerDownThenUp: connection refused for a while, then the server
// comes up on the same address: exactly one message.
func TestServerDownThenUp(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cfg := testConfig(0)
	cfg.SMTP.Port = atoi(t, port)
	n := e.start(cfg, nil)
	ev := testSuspension("alice@example.com", "example", time.Now(), nil)
	e.publishEvent(ev)
	waitFor(t, waitLong, "two failed attempts", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).Attempts >= 2 })
	if d := e.delivery(n, ev.Account, ev.Suspension.ID); d.State != StatePending && d.State != StateSending {
		t.Fatalf("state %s while the server is down", d.State)
	}
	srv := startSMTP(t, smtpOpts{addr: addr})
	waitFor(t, waitLong, "sent", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateSent })
	waitFor(t, waitLong, "consumer settled", func() bool { return e.settled(cfg.Durable) })
	if got := len(srv.messages()); got != 1 {
		t.Fatalf("%d messages, want 1", got)
	}
}

// TestRacingNotifiers: two notifiers on different durables both receive
// the event, and two more share a durable; the SMTP server holds DATA
// open so the others find the lease taken. One message.
func TestRacingNotifiers(t *testing.T) {
	e := newEnv(t)
	gate := make(chan struct{})
	srv := startSMTP(t, smtpOpts{gate: gate})
	cfgA := testConfig(srv.port(t))
	cfgB := testConfig(srv.port(t))
	var ns []*Notifier
	for _, cfg := range []Config{cfgA, cfgA, cfgB, cfgB} {
		ns = append(ns, e.start(cfg, nil))
	}
	ev := testSuspension("alice@example.com", "example", time.Now(), nil)
	e.publishEvent(ev)
	waitFor(t, waitLong, "a DATA in progress", func() bool { _, d := srv.counts(); return d >= 1 })
	// While one notifier is inside DATA, the other durable's notifiers
	// get the event, find the lease taken and back off: wait until that
	// happened a few times.
	waitFor(t, waitLong, "others backed off", func() bool { return e.delivered(cfgA.Durable)+e.delivered(cfgB.Durable) >= 4 })
	close(gate)
	waitFor(t, waitLong, "sent", func() bool { return e.delivery(ns[0], ev.Account, ev.Suspension.ID).State == StateSent })
	waitFor(t, waitLong, "both consumers settled", func() bool { return e.settled(cfgA.Durable) && e.settled(cfgB.Durable) })
	if got := len(srv.messages()); got != 1 {
		t.Fatalf("%d messages, want 1", got)
	}
	if _, datas := srv.counts(); datas != 1 {
		t.Fatalf("%d DATA transactions, want 1", datas)
	}
}

// TestCrashedSender: a notice left in "sending" by a notifier that died
// is sent once its lease expires, with the stored Message-ID.
func TestCrashedSender(t *testing.T) {
	e := newEnv(t)
	srv := startSMTP(t, smtpOpts{})
	cfg := testConfig(srv.port(t))
	ev := testSuspension("alice@example.com", "example", time.Now(), nil)

	// The dead notifier: rendered and claimed, then gone.
	stream, _ := e.js.Stream(context.Background(), "AUP_VERDICTS")
	dead, err := New(cfg, Options{Redis: e.rdb, KeyPrefix: e.prefix, Samples: StreamSamples{Stream: stream}, Directory: e.dir, Owner: "dead"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := dead.store.key(ev.Account, ev.Suspension.ID)
	if err := dead.prepare(ctx, key, ev, dead.log); err != nil {
		t.Fatal(err)
	}
	if c, err := dead.store.claim(ctx, key, "dead", time.Now(), 500*time.Millisecond); err != nil || c.status != "claimed" {
		t.Fatalf("claim: %+v %v", c, err)
	}
	stored := e.delivery(dead, ev.Account, ev.Suspension.ID).MessageID

	n := e.start(cfg, nil)
	e.publishEvent(ev)
	waitFor(t, waitLong, "sent", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateSent })
	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	p := checkNotice(t, msgs[0].data, nil, "abuse@example.com")
	if p.header.Get("Message-Id") != stored {
		t.Errorf("Message-ID %q, stored %q", p.header.Get("Message-Id"), stored)
	}
	if d := e.delivery(n, ev.Account, ev.Suspension.ID); d.Attempts != 2 {
		t.Errorf("attempts %d, want 2", d.Attempts)
	}
}

// TestTLSAndAuth: STARTTLS and implicit TLS, with authentication.
func TestTLSAndAuth(t *testing.T) {
	for _, mode := range []string{TLSStartTLS, TLSImplicit} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			srv := startSMTP(t, smtpOpts{tlsMode: mode, user: "notifier", password: "s3cret"})
			cfg := testConfig(srv.port(t))
			cfg.SMTP.TLS = mode
			cfg.SMTP.InsecureSkipVerify = true
			cfg.SMTP.Username, cfg.SMTP.Password = "notifier", "s3cret"
			n := e.start(cfg, nil)
			ev := testSuspension("alice@example.com", "example", time.Now(), nil)
			e.publishEvent(ev)
			waitFor(t, waitLong, "sent", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateSent })
			srv.mu.Lock()
			auths := srv.authOK
			srv.mu.Unlock()
			if len(srv.messages()) != 1 || auths != 1 {
				t.Errorf("messages %d, authentications %d", len(srv.messages()), auths)
			}
		})
	}
}

// TestEMLDir: with eml_dir set, the notice is written as a file.
func TestEMLDir(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(25)
	cfg.EMLDir = t.TempDir()
	n := e.start(cfg, nil)
	ev := testSuspension("alice@example.com", "example", time.Now(), nil)
	e.publishEvent(ev)
	waitFor(t, waitLong, "sent", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateSent })
	files, err := filepath.Glob(filepath.Join(cfg.EMLDir, "*.eml"))
	if err != nil || len(files) != 1 {
		t.Fatalf("eml files %q, %v", files, err)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	checkNotice(t, b, nil, "abuse@example.com")
	if d := e.delivery(n, ev.Account, ev.Suspension.ID); !strings.Contains(d.SMTPReply, files[0]) {
		t.Errorf("reply %q", d.SMTPReply)
	}
}

// TestSamplesUnavailable: an error from the sample source is retried, and
// nothing is rendered until it answers.
func TestSamplesUnavailable(t *testing.T) {
	e := newEnv(t)
	srv := startSMTP(t, smtpOpts{})
	cfg := testConfig(srv.port(t))
	src := &flakySamples{fails: 2}
	n, err := New(cfg, Options{Redis: e.rdb, KeyPrefix: e.prefix, JetStream: e.js, Samples: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	ev := testSuspension("alice@example.com", "example", time.Now(), []uint64{1})
	e.publishEvent(ev)
	waitFor(t, waitLong, "sent", func() bool { return e.delivery(n, ev.Account, ev.Suspension.ID).State == StateSent })
	if src.calls() != 3 || len(srv.messages()) != 1 {
		t.Errorf("sample calls %d, messages %d", src.calls(), len(srv.messages()))
	}
}

type flakySamples struct {
	mu    sync.Mutex
	fails int
	n     int
}

func (f *flakySamples) Samples(context.Context, []uint64) ([]*events.Verdict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.n <= f.fails {
		return nil, errors.New("verdict stream unavailable")
	}
	return nil, nil
}

func (f *flakySamples) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// TestNoticeNeverGoesToItsMailbox: a notice is never delivered to the
// suspended mailbox, which whoever stole its password can read. A
// company whose abuse contact is the account (exactly, in another case,
// or as a +tag extension) gets its notice at the fallback contact, and
// the redirect is recorded; when the fallback is the account as well,
// nothing is sent, and the notice is recorded as failed with the reason.
func TestNoticeNeverGoesToItsMailbox(t *testing.T) {
	e := newEnv(t)
	e.dir["self"] = Company{Name: "Self Ltd", AbuseContact: "Abuse <ABUSE@self.example>"}
	e.dir["tagged"] = Company{Name: "Tagged Ltd", AbuseContact: "abuse+aup@tagged.example"}
	srv := startSMTP(t, smtpOpts{})
	reg := prometheus.NewRegistry()
	cfg := testConfig(srv.port(t))
	n := e.start(cfg, reg)

	self := testSuspension("abuse@self.example", "self", time.Now(), nil)
	tagged := testSuspension("Abuse@Tagged.example", "tagged", time.Now(), nil)
	tagged.Account = "abuse@tagged.example"
	fallback := testSuspension("fallback-abuse@provider.test", "unknown", time.Now(), nil)
	fallbackTag := testSuspension("fallback-abuse@provider.test", "example", time.Now(), nil)
	// The company's contact is fine here: a notice about the fallback
	// mailbox goes to the company, not to the fallback.
	fallbackTag.Company = "example"
	for _, ev := range []*events.AccountEvent{self, tagged, fallback, fallbackTag} {
		e.publishEvent(ev)
	}
	waitFor(t, waitLong, "four notices settled", func() bool {
		return e.delivery(n, self.Account, self.Suspension.ID).State == StateSent &&
			e.delivery(n, tagged.Account, tagged.Suspension.ID).State == StateSent &&
			e.delivery(n, fallback.Account, fallback.Suspension.ID).State == StateFailed &&
			e.delivery(n, fallbackTag.Account, fallbackTag.Suspension.ID).State == StateSent
	})
	waitFor(t, waitLong, "consumer settled", func() bool { return e.settled(cfg.Durable) })

	msgs := srv.messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages delivered, want 3", len(msgs))
	}
	var toFallback, toCompany int
	for _, m := range msgs {
		for _, rcpt := range m.to {
			switch strings.ToLower(rcpt) {
			case "fallback-abuse@provider.test":
				toFallback++
			case "abuse@example.com":
				toCompany++
			default:
				t.Errorf("a notice went to %q", rcpt)
			}
		}
	}
	if toFallback != 2 || toCompany != 1 {
		t.Errorf("%d notices to the fallback, %d to the company, want 2 and 1", toFallback, toCompany)
	}
	for _, ev := range []*events.AccountEvent{self, tagged} {
		d := e.delivery(n, ev.Account, ev.Suspension.ID)
		if d.Recipient != "fallback-abuse@provider.test" || d.RecipientReason != ReasonContactIsAccount ||
			d.RecipientNote != "notice sent to the provider's fallback contact because the company's abuse contact is this mailbox" {
			t.Errorf("%s: recipient %q reason %q note %q", ev.Account, d.Recipient, d.RecipientReason, d.RecipientNote)
		}
	}
	d := e.delivery(n, fallback.Account, fallback.Suspension.ID)
	if d.Recipient != "" || d.RecipientReason != ReasonFallbackIsAccount || !strings.Contains(d.LastError, "fallback contact is this mailbox") || d.Attempts != 0 {
		t.Errorf("fallback = account: %+v", d)
	}
	if ev, err := n.Store().Evidence(context.Background(), fallback.Account, fallback.Suspension.ID); err != nil || len(ev) == 0 {
		t.Errorf("evidence of the unsent notice: %d bytes, %v", len(ev), err)
	}
	failed, err := n.Store().Failed(context.Background(), 10)
	if err != nil || len(failed) != 1 || failed[0].SuspensionID != fallback.Suspension.ID {
		t.Errorf("failed list %+v, %v", failed, err)
	}
	if d := e.delivery(n, fallbackTag.Account, fallbackTag.Suspension.ID); d.Recipient != "abuse@example.com" || d.RecipientReason != "" || d.RecipientNote != "" {
		t.Errorf("notice about the fallback mailbox to its company: %+v", d)
	}
	if got := labelled(t, reg, "aupd_notice_redirects_total", "reason", ReasonContactIsAccount); got != 2 {
		t.Errorf("redirects{contact_is_account} = %v, want 2", got)
	}
	if got := labelled(t, reg, "aupd_notice_redirects_total", "reason", ReasonFallbackIsAccount); got != 1 {
		t.Errorf("redirects{fallback_is_account} = %v, want 1", got)
	}
	if got := counter(t, reg, "failed"); got != 1 {
		t.Errorf("failed counter %v, want 1", got)
	}
}

func TestSameMailbox(t *testing.T) {
	for _, tc := range []struct {
		contact, account string
		want             bool
	}{
		{"abuse@acme.example", "abuse@acme.example", true},
		{"ABUSE@Acme.Example", "abuse@acme.example", true},
		{"Abuse Team <abuse@acme.example>", "abuse@acme.example", true},
		{"abuse+x@acme.example", "abuse@acme.example", true},
		{"abuse@acme.example", "abuse+x@acme.example", true},
		{"abuse@acme.example.", "abuse@acme.example", true},
		{"abuse@acme.example", "abuse2@acme.example", false},
		{"abuse@acme.example", "abuse@other.example", false},
		{"+x@acme.example", "@acme.example", false},
		{"", "", false},
		{"abuse@acme.example", "", false},
	} {
		if got := SameMailbox(tc.contact, tc.account); got != tc.want {
			t.Errorf("SameMailbox(%q, %q) = %v, want %v", tc.contact, tc.account, got, tc.want)
		}
	}
}
