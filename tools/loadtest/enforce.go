package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/rules"
)

// ---- e. Time to enforcement ---------------------------------------------.

// The phase's timing: how often a probe asks the policy server again, and
// how long it waits for a refusal before it counts the account as never
// refused.
const (
	pollEvery  = time.Millisecond
	probeLimit = 30 * time.Second
)

// enforceTarget is the p99 time to enforcement at half load that issue
// #27 asks for.
const enforceTarget = 100 * time.Millisecond

// Enforcement is what phase e measured.
type Enforcement struct {
	Drain      float64 // events/s aupd drained the phase's backlog at
	Offered    float64 // events/s published while the probes ran (background and probes)
	Probes     int     // accounts made to cross
	Times      []time.Duration
	NotRefused []string // accounts the policy server never refused
}

// enforcement measures the time from the verdict that makes an account
// cross the threshold to the first refusal of its submission by aupd's
// Postfix policy server, while a load runs at about half the drain rate:
// it drains evs as a backlog (the drain rate), then runs the background
// load and, every EnforceEvery, makes a fresh account cross and asks the
// policy server about it every pollEvery until it refuses it.
func (r *runner) enforcement(ctx context.Context, evs []Event) error {
	s, err := r.setup(ctx, "e")
	if err != nil {
		return err
	}
	defer s.close()
	s.cfg.Policy.Postfix.Listen = "127.0.0.1:0"
	if err := s.cfg.Validate(); err != nil {
		return err
	}
	if _, err := r.publish(ctx, s.js, evs, func(e Event) string { return e.Subject }); err != nil {
		return err
	}
	// From here on only their number: the events (about 700 bytes and five
	// pointers each) are dead before the probes start (evs is not used
	// again, and the caller let go of its own reference), so that the
	// collector's marking of this process's heap does not lengthen the
	// probes' times.
	total := len(evs)
	info, stop, err := r.startAupd(ctx, s.cfg)
	if err != nil {
		return err
	}
	defer func() { _ = stop() }()
	cons, err := s.js.Consumer(ctx, s.cfg.NATS.Verdicts.Name, s.cfg.NATS.Consumer.Durable)
	if err != nil {
		return err
	}
	first, last, err := r.waitDrained(ctx, cons, uint64(total))
	if err != nil {
		return err
	}
	if !last.After(first) {
		return fmt.Errorf("%d events drained too fast to time (raise -events)", total)
	}
	e := &Enforcement{Drain: float64(total) / last.Sub(first).Seconds(), Probes: r.cfg.EnforceAccounts}
	r.enforce = e
	r.add("e", "events/s, backlog drain", "%.0f  (%d events, with the policy server on)", e.Drain, total)

	published := &atomic.Int64{}
	published.Store(int64(total))
	p := prober{r: r, js: s.js, addr: info.PostfixAddr, refusal: s.cfg.Policy.Postfix.SendSuspendedAction,
		threshold: s.cfg.AUP.Threshold, published: published}
	if err := p.run(ctx, e); err != nil {
		return err
	}
	if _, _, err := r.waitDrained(ctx, cons, uint64(published.Load())); err != nil {
		return fmt.Errorf("after the probes: %w", err)
	}
	r.enforcementRows(e)
	if len(e.NotRefused) > 0 {
		return fmt.Errorf("%d of %d accounts not refused within %s of crossing, among them %s", len(e.NotRefused), e.Probes, probeLimit, e.NotRefused[0])
	}
	return stop()
}

// prober makes accounts cross and asks the policy server about them.
type prober struct {
	r         *runner
	js        jetstream.JetStream
	addr      string // the Postfix policy server
	refusal   string // its action for a send-suspended account
	threshold int
	published *atomic.Int64 // events in the verdict stream, background and probes included
}

// run runs the background load and the probes, and fills e.
func (p prober) run(ctx context.Context, e *Enforcement) error {
	every := p.r.cfg.EnforceEvery
	probeRate := float64(p.threshold+1) / every.Seconds()
	bgRate := max(0, e.Drain/2-probeRate)
	// The background load is generated before the probes start: making
	// it as it is published cost this process about 6 us of CPU an event
	// (14% of its CPU at half load on 2 cores), in bursts of 60 ms, time
	// taken from aupd and the NATS server while they were timed. The
	// probes take EnforceAccounts*EnforceEvery, and the last of them some
	// time after; beyond a second more, background makes the rest.
	want := bgRate * (float64(e.Probes)*every.Seconds() + 1)
	load := p.generate(0, int(math.Ceil(want/bgChunk)))
	bctx, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var bg sync.WaitGroup
	var bgErr error
	start, before := time.Now(), p.published.Load()
	bg.Go(func() { bgErr = p.background(bctx, bgRate, load) })

	var mu sync.Mutex
	var probes sync.WaitGroup
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := range e.Probes {
		acct := fmt.Sprintf("tte%05d-%s@%s", i, p.r.prefix, domainA)
		probes.Go(func() {
			d, err := p.probe(ctx, acct, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				e.NotRefused = append(e.NotRefused, fmt.Sprintf("%s (%v)", acct, err))
				return
			}
			e.Times = append(e.Times, d)
		})
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	probes.Wait()
	e.Offered = float64(p.published.Load()-before) / time.Since(start).Seconds()
	stopBG()
	bg.Wait()
	if bgErr != nil {
		return fmt.Errorf("background load: %w", bgErr)
	}
	return ctx.Err()
}

// background publishes the events of load at rate events/s until ctx
// ends, checking every 10 ms how far behind the rate it is; past the end
// of load it generates more as it goes.
func (p prober) background(ctx context.Context, rate float64, load *bgLoad) error {
	if rate <= 0 {
		<-ctx.Done()
		return nil
	}
	chunks := load.len() / bgChunk
	start, sent := time.Now(), 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return p.settle()
		case <-tick.C:
		}
		for ; float64(sent) < rate*time.Since(start).Seconds(); sent++ {
			if load.len() == 0 {
				load = p.generate(chunks, 1)
				chunks++
			}
			subject, data := load.next()
			if err := p.publishAsync(ctx, subject, data); err != nil {
				if ctx.Err() != nil { // stopped while it waited out a stalled publisher
					return p.settle()
				}
				return err
			}
		}
	}
}

// bgLoad is the background load's events, what publishing them needs:
// their payloads one after another in one buffer and their subjects, so
// that the collector has three objects to mark, not a million.
type bgLoad struct {
	data []byte
	ends []int32 // where each payload ends in data
	dirs []uint8 // index in bgSubjects of each event's subject
	i    int     // the next event
}

var bgSubjects = []string{events.SubjectPrefix + string(rules.Outbound), events.SubjectPrefix + string(rules.Inbound),
	events.SubjectPrefix + string(rules.Complaint)}

// len is how many events are left.
func (l *bgLoad) len() int { return len(l.ends) - l.i }

// next takes the next event off the load.
func (l *bgLoad) next() (subject string, data []byte) {
	start := 0
	if l.i > 0 {
		start = int(l.ends[l.i-1])
	}
	end := int(l.ends[l.i])
	subject, data = bgSubjects[l.dirs[l.i]], l.data[start:end:end]
	l.i++
	return subject, data
}

// bgChunk is how many background events are generated at a time.
const bgChunk = 10_000

// generate makes n chunks of background events, the first numbered
// first+1.
func (p prober) generate(first, n int) *bgLoad {
	l := &bgLoad{data: make([]byte, 0, n*bgChunk*512), ends: make([]int32, 0, n*bgChunk), dirs: make([]uint8, 0, n*bgChunk)}
	for c := first + 1; c <= first+n; c++ {
		for _, e := range Generate(bgChunk, p.r.cfg.Accounts, p.r.cfg.Seed+uint64(1000+c), fmt.Sprintf("g%d", c), time.Now()) {
			l.data = append(l.data, e.Data...)
			l.ends = append(l.ends, int32(len(l.data)))
			l.dirs = append(l.dirs, uint8(slices.Index(bgSubjects, e.Subject)))
		}
	}
	return l
}

// publishAsync publishes one event without waiting for its ack, waiting
// for the outstanding ones when too many are.
func (p prober) publishAsync(ctx context.Context, subject string, data []byte) error {
	_, err := p.publishFuture(ctx, subject, data)
	return err
}

// publishFuture is publishAsync, returning the ack to come.
func (p prober) publishFuture(ctx context.Context, subject string, data []byte) (jetstream.PubAckFuture, error) {
	for {
		f, err := p.js.PublishAsync(subject, data)
		if err == nil {
			p.published.Add(1)
			return f, nil
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return nil, fmt.Errorf("publish: %w", err)
		}
		select {
		case <-p.js.PublishAsyncComplete():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// settle waits for the acks of what was published.
func (p prober) settle() error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-time.After(p.r.cfg.Timeout):
		return errors.New("publish acks did not arrive")
	}
}

// probe makes acct cross: threshold+1 spam verdicts published in one go,
// the last of which crosses. It asks the policy server about acct's
// submission first (it must be allowed), then, from the publishing of
// the crossing verdict, every pollEvery until it is refused, and returns
// that time.
func (p prober) probe(ctx context.Context, acct string, n int) (time.Duration, error) {
	c, err := dialPolicy(ctx, p.addr)
	if err != nil {
		return 0, err
	}
	defer c.close()
	switch action, err := c.ask(acct); {
	case err != nil:
		return 0, fmt.Errorf("before crossing: %w", err)
	case action != "DUNNO":
		return 0, fmt.Errorf("before crossing: action %q, want DUNNO", action)
	}
	rng := rand.New(rand.NewPCG(p.r.cfg.Seed, uint64(n)))
	now := time.Now().UTC()
	var last jetstream.PubAckFuture
	var t0 time.Time
	for i := range p.threshold + 1 {
		e := Event{ID: fmt.Sprintf("tte-%s-%d", acct, i), Account: acct, Direction: rules.Outbound, Verdict: rules.Spam,
			Time: now.Add(-time.Duration(i) * time.Millisecond), Local: true}
		if i == p.threshold {
			t0 = time.Now() // this one crosses
		}
		if last, err = p.publishFuture(ctx, events.SubjectPrefix+string(e.Direction), payload(rng, e)); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(probeLimit)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		action, err := c.ask(acct)
		switch {
		case err != nil:
			return 0, err
		case action == p.refusal:
			d := time.Since(t0)
			return d, acked(ctx, last)
		case action != "DUNNO":
			return 0, fmt.Errorf("unexpected action %q", action)
		case time.Now().After(deadline):
			return 0, fmt.Errorf("not refused within %s", probeLimit)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// acked waits for the ack of an asynchronous publish.
func acked(ctx context.Context, f jetstream.PubAckFuture) error {
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return fmt.Errorf("publish the crossing verdict: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// policyConn is one connection to the Postfix policy server, which asks
// as Postfix's smtpd does (the policy delegation protocol), one request
// at a time.
type policyConn struct {
	conn net.Conn
	rd   *bufio.Reader
	n    int // requests sent, for their instance attribute
}

func dialPolicy(ctx context.Context, addr string) (*policyConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("policy server: %w", err)
	}
	return &policyConn{conn: conn, rd: bufio.NewReader(conn)}, nil
}

func (c *policyConn) close() { _ = c.conn.Close() }

// ask sends the RCPT-time request of an authenticated submission by
// account to an external recipient and returns the action answered.
func (c *policyConn) ask(account string) (string, error) {
	c.n++
	req := fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTPSA\n"+
		"client_address=127.0.0.1\nclient_name=localhost\nhelo_name=client.test\nsasl_method=PLAIN\n"+
		"sasl_username=%s\nsender=%s\nrecipient=someone@%s\nrecipient_count=0\ninstance=aupload.%d\n\n",
		account, account, external, c.n)
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write([]byte(req)); err != nil {
		return "", fmt.Errorf("policy request: %w", err)
	}
	var action string
	for {
		line, err := c.rd.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("policy reply: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return action, nil
		}
		if v, ok := strings.CutPrefix(line, "action="); ok {
			action = v
		}
	}
}

// enforcementRows adds phase e's figures to the rows.
func (r *runner) enforcementRows(e *Enforcement) {
	r.add("e", "load while probing", "%.0f events/s (%.2fx the drain rate), among them %d accounts' crossings, one every %s",
		e.Offered, e.Offered/e.Drain, e.Probes, r.cfg.EnforceEvery)
	if len(e.Times) == 0 {
		return
	}
	p50, p99, mx := e.quantiles()
	r.add("e", "time to enforcement p50/p99/max", "%s / %s / %s (%d accounts refused of %d)", ms(p50), ms(p99), ms(mx), len(e.Times), e.Probes)
}

// quantiles are the p50, p99 and maximum of the times to enforcement.
func (e *Enforcement) quantiles() (p50, p99, mx time.Duration) {
	p := percentiles(e.Times) // sorts them
	return p[0], p[2], e.Times[len(e.Times)-1]
}

// enforcementSummary is the phase's verdict against the target.
func (r *runner) enforcementSummary() {
	e := r.enforce
	if e == nil || len(e.Times) == 0 {
		return
	}
	p50, p99, mx := e.quantiles()
	verdict := "meets"
	if p99 >= enforceTarget {
		verdict = "MISSES"
	}
	fmt.Fprintf(r.out, "time to enforcement at %.2fx the drain rate: p50 %s, p99 %s, max %s over %d accounts: %s the p99 target of %s\n",
		e.Offered/e.Drain, ms(p50), ms(p99), ms(mx), len(e.Times), verdict, ms(enforceTarget))
}
