package volume

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/policy/postfix"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// The tests run the Postfix policy server with a Counter on the real
// store (the local Redis, under a random prefix) and talk the policy
// protocol to it as Postfix does: a request per recipient at RCPT time,
// then one at END-OF-MESSAGE with recipient_count, each naming the mail
// transaction (instance) and, once it is open, the queue file (queue_id).
// The store's scripts read a pinned clock, Redis's clock in production,
// which the tests move to a window's end instead of waiting for it.

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

type env struct {
	t    *testing.T
	st   *store.Store
	clk  *testutil.Clock
	reg  *prometheus.Registry
	ctr  *Counter
	addr string
	prov atomic.Pointer[rules.Provider]
	seq  atomic.Int64
	js   jetstream.JetStream // where the counters publish account events
	// the Redis commands and round trips of the policy server's store
	cmds, trips atomic.Int64
}

// run runs a counter's publisher until the test ends.
func (e *env) run(c *Counter) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Error(err)
		}
	})
}

// accountStream starts an in-process NATS server with the account event
// stream, as aupd's own.
func accountStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	js := testutil.JetStream(t, testutil.NATSServer(t, "").ClientURL())
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "AUP_ACCOUNTS", Subjects: []string{events.AccountSubjectPrefix + ">"}}); err != nil {
		t.Fatal(err)
	}
	return js
}

// jsPublisher publishes account events as aupd does (app's).
type jsPublisher struct{ js jetstream.JetStream }

func (p jsPublisher) PublishAccountEvent(ctx context.Context, ev *events.AccountEvent, data []byte) error {
	m := nats.NewMsg(events.AccountSubjectPrefix + ev.Type)
	m.Data = data
	m.Header.Set(nats.MsgIdHdr, ev.ID)
	_, err := p.js.PublishMsg(ctx, m)
	return err
}

// accountEvents reads every account event published so far.
func (e *env) accountEvents() []events.AccountEvent {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.js.OrderedConsumer(ctx, "AUP_ACCOUNTS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []events.AccountEvent
	for range info.NumPending {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		var ev events.AccountEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

var (
	hourly   = rules.VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 10, Action: rules.VolumeThrottle}
	tenMin   = rules.VolumeLimit{Name: "burst", Window: 10 * time.Minute, Messages: 3, Action: rules.VolumeThrottle}
	acmeOwn  = []rules.VolumeLimit{{Name: "hourly", Window: time.Hour, Messages: 2, Action: rules.VolumeThrottle}}
	noLimits = []rules.VolumeLimit{}
)

// newEnv starts a policy server whose provider's volume limits are
// limits. Companies: acme.example with limits of its own and a volume
// allowlist, quiet.example with none; other domains belong to no company.
func newEnv(t *testing.T, mode rules.Mode, limits ...rules.VolumeLimit) *env {
	t.Helper()
	rdb, prefix := testutil.Redis(t)
	e := &env{t: t, clk: testutil.NewClock(t0), reg: prometheus.NewRegistry()}
	rdb.AddHook(redisCounter{&e.cmds, &e.trips})
	e.st = store.New(rdb, prefix, store.WithClock(e.clk.Now))
	e.prov.Store(&rules.Provider{Mode: mode, Volume: limits, VolumeAllowlist: []string{"news@example.com"}})
	dir, err := companies.New(nil, prefix, []companies.Company{
		{ID: "acme", Domains: []string{"acme.example"}, Volume: &acmeOwn, VolumeAllowlist: []string{"bulk@acme.example"}},
		{ID: "quiet", Domains: []string{"quiet.example"}, Volume: &noLimits},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.js = accountStream(t)
	e.ctr, err = New(Options{Store: e.st, Directory: dir, Policy: func() rules.Provider { return *e.prov.Load() }, Registerer: e.reg,
		Publisher: jsPublisher{e.js}})
	if err != nil {
		t.Fatal(err)
	}
	e.run(e.ctr)
	srv, err := postfix.New(postfix.Config{}, lookup{e.st, dir}, postfix.Options{Now: e.clk.Now, Volume: e.ctr, Registerer: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return e
}

// lookup is the recipient lookup the app makes (app.accounts).
type lookup struct {
	st  *store.Store
	dir *companies.Directory
}

func (l lookup) LookupAll(ctx context.Context, accounts ...string) ([]postfix.Account, error) {
	as, err := l.st.Accounts(ctx, accounts...)
	if err != nil {
		return nil, err
	}
	out := make([]postfix.Account, len(as))
	for i, a := range as {
		_, local := l.dir.ByAccount(a.Address)
		out[i] = postfix.Account{View: a.View(), Governed: local || a.Exists, Version: a.Version, Throttled: a.Throttled}
	}
	return out, nil
}

// conn is one policy connection, as one smtpd process holds.
type conn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (e *env) dial() *conn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &conn{t: e.t, c: c, r: bufio.NewReader(c)}
}

// ask sends one request and returns the action.
func (c *conn) ask(attrs ...string) string {
	c.t.Helper()
	req := "request=smtpd_access_policy\nprotocol_name=ESMTP\n" + strings.Join(attrs, "\n") + "\n\n"
	if _, err := c.c.Write([]byte(req)); err != nil {
		c.t.Fatal(err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.r.ReadString('\n'); err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "action=")
}

// message is one mail transaction of an authenticated sender.
type message struct {
	sender, instance, queueID, client string
}

func (e *env) message(sender string) message {
	n := e.seq.Add(1)
	return message{sender: sender, instance: fmt.Sprintf("1f3a.6540f1aa.%x.%d", n, n), queueID: fmt.Sprintf("4Xq%04X", n), client: "192.0.2.10"}
}

func (m message) attrs(state string) []string {
	return []string{"protocol_state=" + state, "sasl_username=" + m.sender, "sender=" + m.sender,
		"client_address=" + m.client, "instance=" + m.instance}
}

// rcpt asks about recipient i of the message, as smtpd does at RCPT time
// (the queue file opens after the first recipient: no queue_id yet).
func (c *conn) rcpt(m message, i int) string {
	a := m.attrs("RCPT")
	a = append(a, fmt.Sprintf("recipient=friend%d@elsewhere.test", i), "recipient_count=0")
	if i > 0 {
		a = append(a, "queue_id="+m.queueID)
	}
	return c.ask(a...)
}

// eom asks at END-OF-MESSAGE about the message's n recipients.
func (c *conn) eom(m message, n int) string {
	return c.ask(append(m.attrs("END-OF-MESSAGE"), "queue_id="+m.queueID, fmt.Sprintf("recipient_count=%d", n), "recipient=")...)
}

// send submits a message of n recipients: the RCPT answers (the first
// refusal ends it, as a client that gets a 4xx or 5xx for every recipient
// does not send DATA) and, when they all passed, the END-OF-MESSAGE one.
func (c *conn) send(m message, n int) string {
	c.t.Helper()
	for i := range n {
		if a := c.rcpt(m, i); a != "DUNNO" {
			return a
		}
	}
	return c.eom(m, n)
}

const (
	throttled = "452 4.7.1 Sending limit reached for this account, try again later"
	suspended = "554 5.7.1 Sending is suspended for this account"
)

func (e *env) messages(outcome string) float64 {
	return value(e.t, e.ctr.metrics.messages.WithLabelValues(outcome))
}

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestPostfixAskingAgainCountsOnce(t *testing.T) {
	e := newEnv(t, rules.ModeEnforce, tenMin)
	c := e.dial()
	m := e.message("alice@example.com")
	if a := c.send(m, 1); a != "DUNNO" {
		t.Fatalf("first message: %s", a)
	}
	// Postfix did not get the answer (a timeout, a broken connection)
	// and asks again, on a new connection, with the same request.
	for range 3 {
		if a := e.dial().eom(m, 1); a != "DUNNO" {
			t.Fatalf("asked again: %s", a)
		}
	}
	if n := e.messages(outcomeDuplicate); n != 3 {
		t.Errorf("%v duplicates; want 3", n)
	}
	// Counted once: two more messages stay within 3 in 10 minutes, and
	// the fourth crosses; the one after it is throttled.
	for i := range 3 {
		if a := c.send(e.message("alice@example.com"), 1); a != "DUNNO" {
			t.Fatalf("message %d: %s", i+2, a)
		}
	}
	if a := c.send(e.message("alice@example.com"), 1); a != throttled {
		t.Fatalf("fifth message: %s; want the throttle", a)
	}
}

// A request waits for one Redis round trip: at RCPT time the sender's and
// the recipient's states are read together, and at END-OF-MESSAGE the
// count is one call; only a throttled sender's RCPT request costs a
// second, the throttle's.
func TestOneRoundTripARequest(t *testing.T) {
	e := newEnv(t, rules.ModeEnforce, tenMin)
	c := e.dial()
	// The store's first request opens its Redis connection (HELLO and
	// the client's name), which no request pays again.
	if a := c.rcpt(e.message("zed@example.com"), 0); a != "DUNNO" {
		t.Fatal(a)
	}
	trips := func(what string, want int64, ask func() string, answer string) {
		t.Helper()
		e.trips.Store(0)
		if a := ask(); a != answer {
			t.Fatalf("%s: %s; want %s", what, a, answer)
		}
		if n := e.trips.Load(); n != want {
			t.Errorf("%s: %d Redis round trips; want %d", what, n, want)
		}
	}
	for _, sender := range []string{"alice@example.com", "ann@quiet.example"} { // limited, not limited
		m := e.message(sender)
		trips(sender+", RCPT", 1, func() string { return c.rcpt(m, 0) }, "DUNNO")
		trips(sender+", second RCPT", 1, func() string { return c.rcpt(m, 1) }, "DUNNO")
		trips(sender+", END-OF-MESSAGE", 1, func() string { return c.eom(m, 2) }, "DUNNO")
	}
	// The recipient's two forms and the sender, in one round trip.
	m := e.message("alice@example.com")
	e.cmds.Store(0)
	trips("a recipient with an extension", 1, func() string {
		return c.ask(append(m.attrs("RCPT"), "recipient=bob+news@acme.example", "recipient_count=0")...)
	}, "DUNNO")
	if n := e.cmds.Load(); n != 3 {
		t.Errorf("%d commands for the sender and the recipient's two forms; want 3", n)
	}
	// alice's fourth message crosses 3 in 10 minutes: her next RCPT
	// reads the throttle too.
	for range 3 {
		if a := c.send(e.message("alice@example.com"), 1); a != "DUNNO" {
			t.Fatal(a)
		}
	}
	trips("a throttled sender's RCPT", 2, func() string { return c.rcpt(e.message("alice@example.com"), 0) }, throttled)
}

func TestMessageThatNeverReachesEndOfMessageIsNotCounted(t *testing.T) {
	e := newEnv(t, rules.ModeEnforce, tenMin)
	c := e.dial()
	// Ten transactions whose recipients passed aupd but that never got to
	// END-OF-MESSAGE: refused later at RCPT by another restriction, at
	// DATA, or cut off by the client.
	for range 10 {
		m := e.message("alice@example.com")
		for i := range 3 {
			if a := c.rcpt(m, i); a != "DUNNO" {
				t.Fatalf("RCPT: %s", a)
			}
		}
	}
	for i := range 4 {
		if a := c.send(e.message("alice@example.com"), 1); a != "DUNNO" {
			t.Fatalf("message %d: %s", i+1, a)
		}
	}
	if a := c.send(e.message("alice@example.com"), 1); a != throttled {
		t.Fatalf("fifth message: %s; want the throttle", a)
	}
	if n := e.messages(outcomeCounted); n != 4 {
		t.Errorf("%v messages counted; want 4", n)
	}
}

func TestThrottleHoldsUntilTheWindowEnds(t *testing.T) {
	e := newEnv(t, rules.ModeEnforce, hourly)
	c, other := e.dial(), e.dial()
	// A message whose recipients passed on another connection before the
	// throttle, and that reaches END-OF-MESSAGE after it.
	late := e.message("alice@example.com")
	for i := range 2 {
		if a := other.rcpt(late, i); a != "DUNNO" {
			t.Fatalf("RCPT: %s", a)
		}
	}
	if a := c.send(e.message("alice@example.com"), 6); a != "DUNNO" {
		t.Fatalf("6 recipients: %s", a)
	}
	e.clk.Set(t0.Add(30 * time.Minute))
	// 11 recipients in the hour: the message that crosses is accepted (it
	// was counted), the next request of the account is refused.
	if a := c.send(e.message("alice@example.com"), 5); a != "DUNNO" {
		t.Fatalf("the crossing message: %s", a)
	}
	if a := c.rcpt(e.message("alice@example.com"), 0); a != throttled {
		t.Fatalf("RCPT after the crossing: %s", a)
	}
	if a := other.eom(late, 2); a != throttled {
		t.Fatalf("END-OF-MESSAGE after the crossing: %s", a)
	}
	if n := value(t, e.ctr.metrics.throttled.WithLabelValues("volume:hourly")); n != 1 {
		t.Errorf("aupd_volume_throttled_total{rule=volume:hourly} = %v", n)
	}
	// Another account is not held back.
	if a := c.send(e.message("bob@example.com"), 1); a != "DUNNO" {
		t.Fatalf("another account: %s", a)
	}
	// The first message's 6 leave the window at 13:00; until then the
	// throttle holds.
	e.clk.Set(t0.Add(time.Hour - time.Millisecond))
	if a := c.rcpt(e.message("alice@example.com"), 0); a != throttled {
		t.Fatalf("a moment before the end: %s", a)
	}
	e.clk.Set(t0.Add(time.Hour))
	if a := c.send(e.message("alice@example.com"), 5); a != "DUNNO" {
		t.Fatalf("once the window has moved on: %s", a)
	}
}

func TestCompanyLimitsAndAllowlists(t *testing.T) {
	e := newEnv(t, rules.ModeEnforce, tenMin)
	c := e.dial()
	tests := []struct {
		sender string
		ok     int // messages accepted before the throttle; -1: never throttled
	}{
		{"carol@acme.example", 3},  // acme's own limit: 2 messages an hour
		{"dave@quiet.example", -1}, // quiet sets no limits
		{"bulk@acme.example", -1},  // on acme's volume allowlist
		{"news@example.com", -1},   // on the provider's volume allowlist
		{"erin@example.com", 4},    // the provider's limit: 3 in 10 minutes
	}
	for _, tc := range tests {
		t.Run(tc.sender, func(t *testing.T) {
			for i := range 8 {
				a := c.send(e.message(tc.sender), 1)
				want := "DUNNO"
				if tc.ok >= 0 && i >= tc.ok {
					want = throttled
				}
				if a != want {
					t.Fatalf("message %d: %s; want %s", i+1, a, want)
				}
			}
		})
	}
	if n := value(t, e.ctr.metrics.reported.WithLabelValues("volume:burst", "throttle")); n != 1 {
		t.Errorf("the provider's allowlisted account: %v reports; want 1", n)
	}
	// acme's limit is named like the provider's (hourly is not): its label
	// is volume:other.
	if n := value(t, e.ctr.metrics.throttled.WithLabelValues("volume:other")); n != 1 {
		t.Errorf("acme's throttle: %v", n)
	}
}

func TestShadowModeThrottlesNothing(t *testing.T) {
	e := newEnv(t, rules.ModeShadow, tenMin)
	c := e.dial()
	for i := range 10 {
		if a := c.send(e.message("alice@example.com"), 1); a != "DUNNO" {
			t.Fatalf("message %d: %s", i+1, a)
		}
	}
	if n := value(t, e.ctr.metrics.reported.WithLabelValues("volume:burst", "throttle")); n != 1 {
		t.Errorf("%v reports of one crossing; want 1", n)
	}
	if n := value(t, e.ctr.metrics.throttled.WithLabelValues("volume:burst")); n != 0 {
		t.Errorf("%v throttles in shadow mode", n)
	}
	// Back to enforcing (a reload): the account is above its limit, and
	// its next message is throttled once it crosses again.
	e.prov.Store(&rules.Provider{Mode: rules.ModeEnforce, Volume: []rules.VolumeLimit{tenMin}})
	e.clk.Set(t0.Add(20 * time.Minute))
	for i := range 3 {
		if a := c.send(e.message("alice@example.com"), 1); a != "DUNNO" {
			t.Fatalf("enforced, message %d: %s", i+1, a)
		}
	}
	if a := c.send(e.message("alice@example.com"), 1); a != "DUNNO" {
		t.Fatalf("enforced, the crossing message: %s", a)
	}
	if a := c.send(e.message("alice@example.com"), 1); a != throttled {
		t.Fatalf("enforced, after the crossing: %s", a)
	}
}

func TestSuspendedSenderIsRefusedAtEndOfMessage(t *testing.T) {
	e := newEnv(t, rules.ModeEnforce, tenMin)
	c := e.dial()
	m := e.message("alice@example.com")
	if a := c.rcpt(m, 0); a != "DUNNO" {
		t.Fatalf("RCPT: %s", a)
	}
	// Suspended between RCPT and END-OF-MESSAGE (by an admin here; by the
	// spam count or another connection's crossing alike).
	if _, err := e.st.Suspend(context.Background(), "alice@example.com", []rules.Service{rules.ServiceSend},
		store.Actor{Name: "admin", Reason: rules.ReasonAdmin}); err != nil {
		t.Fatal(err)
	}
	if a := c.eom(m, 1); a != suspended {
		t.Fatalf("END-OF-MESSAGE: %s", a)
	}
	if n := e.messages(outcomeCounted); n != 0 {
		t.Errorf("%v counted", n)
	}
}

// second starts another policy server and counter on e's store, as a
// second aupd process on the same Redis.
func (e *env) second() (*Counter, string) {
	e.t.Helper()
	dir, err := companies.New(nil, "x", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ctr, err := New(Options{Store: e.st, Directory: dir, Policy: func() rules.Provider { return *e.prov.Load() }, Registerer: prometheus.NewRegistry(),
		Publisher: jsPublisher{e.js}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.run(ctr)
	srv, err := postfix.New(postfix.Config{}, lookup{e.st, dir}, postfix.Options{Now: e.clk.Now, Volume: ctr})
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Error(err)
		}
	})
	return ctr, ln.Addr().String()
}

func TestTwoServersStartOneThrottle(t *testing.T) {
	limit := rules.VolumeLimit{Name: "burst", Window: 10 * time.Minute, Messages: 20, Action: rules.VolumeThrottle}
	e := newEnv(t, rules.ModeEnforce, limit)
	ctr2, addr2 := e.second()
	const workers, each = 8, 6
	answers := make(chan string, workers*each)
	e.race(t, addr2, workers, each, func(pc *conn) { answers <- pc.send(e.message("alice@example.com"), 1) })
	close(answers)
	var ok, held int
	for a := range answers {
		switch a {
		case "DUNNO":
			ok++
		case throttled:
			held++
		default:
			t.Errorf("answer %q", a)
		}
	}
	// 20 within the limit and the one that crossed; every other message
	// was held back, at RCPT or at END-OF-MESSAGE.
	if ok != 21 || held != workers*each-21 {
		t.Errorf("%d accepted, %d throttled; want 21 and %d", ok, held, workers*each-21)
	}
	counted := e.messages(outcomeCounted) + value(t, ctr2.metrics.messages.WithLabelValues(outcomeCounted))
	started := value(t, e.ctr.metrics.throttled.WithLabelValues("volume:burst")) + value(t, ctr2.metrics.throttled.WithLabelValues("volume:burst"))
	if counted != 21 || started != 1 {
		t.Errorf("%v counted and %v throttles started across both servers; want 21 and 1", counted, started)
	}
}

func TestSuspendLimit(t *testing.T) {
	limit := rules.VolumeLimit{Name: "daily", Window: 24 * time.Hour, Recipients: 8, Action: rules.VolumeSuspend}
	e := newEnv(t, rules.ModeEnforce, limit)
	c, other := e.dial(), e.dial()
	// A message whose recipients another connection passed before the
	// crossing.
	late := e.message("alice@example.com")
	if a := other.rcpt(late, 0); a != "DUNNO" {
		t.Fatalf("RCPT: %s", a)
	}
	if a := c.send(e.message("alice@example.com"), 5); a != "DUNNO" {
		t.Fatalf("5 recipients: %s", a)
	}
	crossing := e.message("alice@example.com")
	crossing.client = "2001:db8:1:2::77"
	if a := c.send(crossing, 4); a != "DUNNO" {
		t.Fatalf("the crossing message: %s", a)
	}
	if a := c.rcpt(e.message("alice@example.com"), 0); a != suspended {
		t.Fatalf("RCPT after the crossing: %s", a)
	}
	if a := other.eom(late, 1); a != suspended {
		t.Fatalf("END-OF-MESSAGE after the crossing: %s", a)
	}
	// Postfix asking again about the message that crossed: it was
	// accepted, and stays so.
	if a := e.dial().eom(crossing, 4); a != "DUNNO" {
		t.Fatalf("the crossing message asked again: %s", a)
	}
	var evs []events.AccountEvent
	testutil.Eventually(t, 10*time.Second, func() bool { evs = e.accountEvents(); return len(evs) > 0 }, "no account event published")
	ev := evs[0]
	if len(evs) != 1 || ev.Type != events.TypeSuspended || ev.Suspension == nil || ev.Suspension.Rule != "volume:daily" ||
		ev.Suspension.Volume == nil || !slices.Equal(ev.Suspension.Volume.Clients, []string{"2001:db8:1:2::/64", "192.0.2.10"}) {
		t.Fatalf("account events %+v", evs)
	}
	if n := value(t, e.ctr.metrics.suspended.WithLabelValues("volume:daily")); n != 1 {
		t.Errorf("aupd_volume_suspensions_total{rule=volume:daily} = %v", n)
	}
}

func TestTwoServersMakeOneSuspension(t *testing.T) {
	limit := rules.VolumeLimit{Name: "daily", Window: 24 * time.Hour, Recipients: 20, Action: rules.VolumeSuspend}
	e := newEnv(t, rules.ModeEnforce, limit)
	ctr2, addr2 := e.second()
	const workers, each = 8, 6
	e.race(t, addr2, workers, each, func(pc *conn) {
		if a := pc.send(e.message("alice@example.com"), 1); a != "DUNNO" && a != suspended {
			t.Errorf("answer %q", a)
		}
	})
	made := value(t, e.ctr.metrics.suspended.WithLabelValues("volume:daily")) + value(t, ctr2.metrics.suspended.WithLabelValues("volume:daily"))
	counted := e.messages(outcomeCounted) + value(t, ctr2.metrics.messages.WithLabelValues(outcomeCounted))
	if made != 1 || counted != 21 {
		t.Errorf("%v suspensions and %v messages counted across both servers; want 1 and 21", made, counted)
	}
	var evs []events.AccountEvent
	testutil.Eventually(t, 10*time.Second, func() bool { evs = e.accountEvents(); return len(evs) > 0 }, "no account event published")
	if len(evs) != 1 || evs[0].Type != events.TypeSuspended {
		t.Errorf("account events %+v; want one suspension", evs)
	}
	h, err := e.st.History(context.Background(), "alice@example.com", 0, 10)
	if err != nil || len(h) != 1 {
		t.Errorf("history %+v, %v; want one entry", h, err)
	}
}

// race runs workers connections, every other one to the second policy
// server at addr2, each calling send each times, and waits for them all.
func (e *env) race(t *testing.T, addr2 string, workers, each int, send func(*conn)) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range workers {
		addr := e.addr
		if w%2 == 1 {
			addr = addr2
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		pc := &conn{t: t, c: c, r: bufio.NewReader(c)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				send(pc)
			}
		}()
	}
	wg.Wait()
}
