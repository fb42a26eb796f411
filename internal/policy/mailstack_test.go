package policy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/app"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/policy/dovecot"
	"github.com/aupd/aupd/internal/policy/lockout"
	"github.com/aupd/aupd/internal/sessionagent"
	"github.com/aupd/aupd/internal/sessionlock"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// The integration tests run the whole aupd in-process (app.Run, with its
// Redis store, NATS streams and both policy servers) against a private
// Postfix and Dovecot (scripts/mailstack). Account states are set through
// the real store, on aupd's Redis prefix.
//
// They are skipped, with the reason, when the daemons cannot be installed
// or started (not root, no apt). AUPD_MAILSTACK=require turns such a skip
// into a failure; AUPD_MAILSTACK=skip skips them.

const (
	domain    = "example.test"
	password  = "Correct-Horse-1"
	threshold = 3
)

// admin is who makes the test's manual changes.
var admin = store.Actor{Name: "mailstack-test", Reason: rules.ReasonAdmin, Note: "integration test"}

type mailstack struct {
	st *store.Store // aupd's account store, on its Redis prefix
	// counter reads the failed-login counts aupd keeps; the test never
	// reports a failure through it.
	counter *lockout.Counter
	// locks reads the mailbox session locks aupd keeps.
	locks                               *sessionlock.Locks
	rdb                                 *redis.Client
	prefix                              string
	dir                                 string // the mail servers' files
	httpAddr                            string // aupd's HTTP listener (/metrics)
	natsURL                             string // aupd's NATS server
	smtp, submission, smtps, imap, pop3 string
	// stopAupd stops aupd, for the outage tests; the mail servers go on.
	stopAupd func()
	// notices is where aupd writes its abuse notices (notifier.eml_dir).
	notices string
}

// stackOptions vary the mail stack from the one TestMailstack uses.
type stackOptions struct {
	// noCompanies runs aupd with an empty company list, as the README's
	// "Try it" does and as a provider that relies on
	// notifier.fallback_abuse_contact would.
	noCompanies bool
	// ownRedis gives aupd a redis-server of its own, which the test may
	// shut down (ms.rdb).
	ownRedis bool
	// env is added to scripts/mailstack's environment.
	env []string
	// aup changes aupd's AUP rule (its volume limits, say).
	aup func(*config.AUP)
	// dovecot changes aupd's Dovecot policy server (its keys, say).
	dovecot func(*dovecot.Config)
	// now pins aupd's clock, the one its Redis scripts read too, so that
	// the test can move it to a window's end instead of waiting.
	now func() time.Time
}

// users of the private Dovecot; all have the same password. The p* ones
// are probed with wrong passwords; popper and crash take session locks.
var users = []string{"active", "nosend", "closed", "maint", "norecv", "suspended", "locked", "victim",
	"plocked", "pclosed", "psuspended", "pmaint", "popper", "crash", "spammer", "burst", "bulk"}

// aliases of the private Postfix (virtual_alias_maps).
var aliases = map[string]string{"alias-closed": "closed", "alias-norecv": "norecv", "alias-maint": "maint"}

// The session lock agent's settings in the test: a lease short enough to
// see one expire, renewed every second, and keepalive settings that end a
// vanished client's connection within seconds.
const (
	sessionLease = 3
	sessionRenew = 1
)

var testKeepalive = func() sessionagent.Keepalive {
	ut := 3 * time.Second
	return sessionagent.Keepalive{Idle: time.Second, Interval: time.Second, Count: 2, UserTimeout: &ut}
}()

func startMailstack(t testing.TB, extraEnv ...string) *mailstack {
	t.Helper()
	return startMailstackWith(t, stackOptions{env: extraEnv})
}

func startMailstackWith(t testing.TB, opt stackOptions) *mailstack {
	t.Helper()
	mode := os.Getenv("AUPD_MAILSTACK")
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf("mailstack: "+format, args...)
		if mode == "require" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if mode == "skip" {
		skip("AUPD_MAILSTACK=skip")
	}
	if testing.Short() {
		skip("skipped in -short mode")
	}
	if os.Getuid() != 0 {
		skip("needs root to run private Postfix and Dovecot instances; run as root or set AUPD_MAILSTACK=skip")
	}
	script, err := filepath.Abs("../../scripts/mailstack")
	if err != nil {
		t.Fatal(err)
	}
	ictx, icancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer icancel()
	install := exec.CommandContext(ictx, script, "install")
	install.WaitDelay = 10 * time.Second
	if out, err := install.CombinedOutput(); err != nil {
		skip("cannot install postfix, dovecot and swaks (%v):\n%s", err, tail(out, 2000))
	}

	// aupd, in-process: the whole of it, with both policy servers.
	rdb, prefix := testutil.Redis(t)
	if opt.ownRedis {
		rdb = redis.NewClient(&redis.Options{Addr: testutil.PrivateRedisServer(t)})
		t.Cleanup(func() { rdb.Close() })
	}
	ns := testutil.NATSServer(t, "")
	level := slog.LevelInfo
	if os.Getenv("AUPD_MAILSTACK_LOGS") == "debug" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	apiKey := testutil.RandomHex(16)
	lcfg := lockout.Config{Threshold: threshold, Window: 15 * time.Minute, Duration: 30 * time.Minute}
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.NATS.URL = ns.ClientURL()
	cfg.Redis.Addrs = []string{rdb.Options().Addr}
	cfg.Redis.Prefix = prefix
	cfg.Redis.Autostart = false
	cfg.Notifier.EMLDir = t.TempDir()
	cfg.Policy.Postfix.Listen = "127.0.0.1:0"
	cfg.Policy.Postfix.TransportListen = "127.0.0.1:0"
	cfg.Policy.Dovecot.Listen = "127.0.0.1:0"
	// The post-login script's token, and leases short enough to see one
	// expire.
	lockToken := testutil.RandomHex(16)
	cfg.Auth.Tokens = []auth.TokenConfig{{Name: "dovecot-postlogin", Role: auth.RoleViewer, Hash: auth.HashToken(lockToken)}}
	cfg.Sessions.MinLease = time.Second
	// The benchmark holds a thousand IMAP sessions of one mailbox.
	cfg.Sessions.MaxHolders = 5000
	cfg.Policy.Dovecot.APIKey = dovecot.Secret(apiKey)
	cfg.Policy.Lockout = lcfg
	cfg.AUP.Threshold = threshold
	if !opt.noCompanies {
		cfg.Companies = []companies.Company{{ID: "test", Domains: []string{domain}}}
	}
	if opt.aup != nil {
		opt.aup(&cfg.AUP)
	}
	if opt.dovecot != nil {
		opt.dovecot(&cfg.Policy.Dovecot)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	info, stopAupd := runAupd(t, cfg, log, opt.now)

	lcfg.KeyPrefix = prefix
	ctr, err := lockout.New(rdb, lcfg, noLocker{t}, lockout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	locks, err := sessionlock.New(rdb, sessionlock.Config{KeyPrefix: prefix, MinLease: time.Second}, sessionlock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info.PostfixTransportAddr == "" {
		t.Fatal("aupd runs without the Postfix transport map")
	}

	// The mail servers, on free loopback ports.
	dir, err := os.MkdirTemp("", "aupd-mailstack-")
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 5)
	ms := &mailstack{st: store.New(rdb, prefix), counter: ctr, locks: locks, rdb: rdb, prefix: prefix,
		dir: dir, httpAddr: info.HTTPAddr, natsURL: ns.ClientURL(), stopAupd: stopAupd, notices: cfg.Notifier.EMLDir,
		smtp: ports[0], submission: ports[1], imap: ports[2], pop3: ports[3], smtps: ports[4]}
	var pairs, aliasPairs []string
	for _, u := range users {
		pairs = append(pairs, u+"@"+domain+":"+password)
	}
	for a, target := range aliases {
		aliasPairs = append(aliasPairs, a+"@"+domain+"="+target+"@"+domain)
	}
	env := append(os.Environ(),
		"MS_SMTP_PORT="+port(ms.smtp), "MS_SUBMISSION_PORT="+port(ms.submission),
		"MS_IMAP_PORT="+port(ms.imap), "MS_POP3_PORT="+port(ms.pop3), "MS_SMTPS_PORT="+port(ms.smtps),
		"MS_POLICY=inet:"+info.PostfixAddr,
		"MS_TRANSPORT=inet:"+info.PostfixTransportAddr,
		"MS_ALIASES="+strings.Join(aliasPairs, " "),
		"MS_SESSIONLOCK_URL=http://"+info.HTTPAddr,
		"MS_SESSIONLOCK_TOKEN="+lockToken,
		"MS_SESSIONLOCK_LEASE="+strconv.Itoa(sessionLease),
		"MS_SESSIONLOCK_RENEW="+strconv.Itoa(sessionRenew),
		fmt.Sprintf("MS_SESSIONLOCK_KEEPALIVE=%d %d %d %d", testKeepalive.Idle/time.Second, testKeepalive.Interval/time.Second,
			testKeepalive.Count, *testKeepalive.UserTimeout/time.Second),
		"MS_AUTH_POLICY_URL=http://"+info.DovecotAddr+"/",
		"MS_AUTH_POLICY_KEY="+apiKey,
		"MS_DOMAINS="+domain,
		"MS_USERS="+strings.Join(pairs, " "),
	)
	env = append(env, opt.env...)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("AUPD_MAILSTACK_LOGS") != "" {
			for _, f := range []string{"postfix/maillog", "dovecot/dovecot.log", "dovecot/sessiond.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
					t.Logf("%s:\n%s", f, tail(b, 6000))
				}
			}
		}
		stop := exec.Command(script, "stop", dir)
		stop.WaitDelay = 10 * time.Second
		out, err := stop.CombinedOutput()
		if err != nil {
			t.Errorf("mailstack stop: %v\n%s", err, out)
		}
		os.RemoveAll(dir)
	})
	sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
	defer scancel()
	start := exec.CommandContext(sctx, script, "start", dir)
	start.Env = env
	start.WaitDelay = 10 * time.Second // never hang on a daemon holding the output pipe
	if out, err := start.CombinedOutput(); err != nil {
		skip("cannot start postfix and dovecot (%v):\n%s", err, tail(out, 4000))
	}
	for addr, greeting := range map[string]string{ms.smtp: "220 ", ms.submission: "220 ", ms.imap: "* OK", ms.pop3: "+OK"} {
		// (smtps greets only after the TLS handshake.)
		waitGreeting(t, addr, greeting)
	}
	return ms
}

// runAupd runs aupd until the test ends, or until stop is called, and
// returns where it listens. now, when not nil, pins its clock.
func runAupd(t testing.TB, cfg *config.Config, log *slog.Logger, now func() time.Time) (info app.Info, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Options{Config: cfg, Logger: log, Now: now, OnReady: func(i app.Info) { ready <- i }})
	}()
	select {
	case info = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("aupd exited: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		t.Fatal("aupd did not start")
	}
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("aupd: %v", err)
		}
	})
	t.Cleanup(stop)
	if info.PostfixAddr == "" || info.DovecotAddr == "" {
		t.Fatalf("aupd runs without a policy server: %+v", info)
	}
	return info, stop
}

// noLocker is the Locker of the test's read-only counter: aupd's own
// counter locks accounts out, never the test's.
type noLocker struct{ t testing.TB }

func (l noLocker) Lockout(context.Context, string, time.Time, string) error {
	l.t.Error("the test's lockout counter was asked to lock an account out")
	return errors.New("not the test's to lock out")
}

// postfixRequests returns how many Postfix policy requests aupd has
// answered, from its metrics.
func (ms *mailstack) postfixRequests(t testing.TB) float64 {
	t.Helper()
	return ms.policyRequests(t, "postfix", "")
}

// policyRequests returns how many policy requests of server aupd has
// answered with result ("": any), from its metrics.
func (ms *mailstack) policyRequests(t testing.TB, server, result string) float64 {
	t.Helper()
	return ms.sumMetric(t, func(line string) bool {
		return strings.HasPrefix(line, "aupd_policy_requests_total{") && strings.Contains(line, `server="`+server+`"`) &&
			(result == "" || strings.Contains(line, `result="`+result+`"`))
	})
}

// metric is the value of one series, named as /metrics writes it
// (name{labels}), 0 when absent.
func (ms *mailstack) metric(t testing.TB, series string) float64 {
	t.Helper()
	return ms.sumMetric(t, func(line string) bool { return strings.HasPrefix(line, series+" ") })
}

// sumMetric sums the values of aupd's /metrics lines that match.
func (ms *mailstack) sumMetric(t testing.TB, match func(line string) bool) float64 {
	t.Helper()
	resp, err := http.Get("http://" + ms.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	var n float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !match(line) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		n += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMailstack(t *testing.T) {
	began := time.Now()
	ms := startMailstack(t)
	t.Logf("mail stack up in %s", time.Since(began).Round(time.Millisecond))
	st := ms.st
	ctx := context.Background()
	for _, acct := range []string{"nosend", "psuspended"} {
		svcs := []rules.Service{rules.ServiceSend}
		if acct == "psuspended" {
			svcs = []rules.Service{rules.ServiceIMAP, rules.ServicePOP3}
		}
		must(t)(st.Suspend(ctx, acct+"@"+domain, svcs, admin))
	}
	for _, acct := range []string{"closed", "pclosed"} {
		must(t)(st.SetStatus(ctx, acct+"@"+domain, rules.StatusClosed, time.Time{}, admin))
	}
	for _, acct := range []string{"maint", "pmaint"} {
		must(t)(st.SetStatus(ctx, acct+"@"+domain, rules.StatusMaintenance, time.Time{}, admin))
	}
	must(t)(st.Suspend(ctx, "norecv@"+domain, []rules.Service{rules.ServiceReceive}, admin))
	must(t)(st.Suspend(ctx, "suspended@"+domain, []rules.Service{rules.ServiceIMAP, rules.ServicePOP3}, admin))
	for _, acct := range []string{"locked", "plocked"} {
		must(t)(st.SetStatus(ctx, acct+"@"+domain, rules.StatusLocked, time.Time{}, admin))
	}
	// The victim is a provisioned mailbox (without its company yet).
	must(t)(st.SetAccount(ctx, "victim@"+domain, rules.TypeMailbox, "", admin))

	t.Run("postfix", func(t *testing.T) {
		t.Parallel()
		t.Run("submission by a send-suspended user is refused", func(t *testing.T) {
			for _, mode := range []string{"--tls", "--tlsc"} { // STARTTLS on 587, implicit TLS on 465
				addr := ms.submission
				if mode == "--tlsc" {
					addr = ms.smtps
				}
				out, err := swaksTLS(t, addr, mode, "nosend@"+domain, "friend@elsewhere.test", password)
				if err == nil {
					t.Fatalf("%s: swaks succeeded:\n%s", mode, out)
				}
				want := "554 5.7.1 <friend@elsewhere.test>: Recipient address rejected: Sending is suspended for this account"
				if !strings.Contains(out, want) {
					t.Fatalf("%s: want %q in:\n%s", mode, want, out)
				}
				if !strings.Contains(out, "235 2.7.0 Authentication successful") {
					t.Errorf("%s: SMTP AUTH did not succeed:\n%s", mode, out)
				}
			}
		})
		t.Run("submission by a normal user is accepted", func(t *testing.T) {
			for _, mode := range []string{"--tls", "--tlsc"} {
				addr := ms.submission
				if mode == "--tlsc" {
					addr = ms.smtps
				}
				out, err := swaksTLS(t, addr, mode, "active@"+domain, "friend@elsewhere.test", password)
				if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
					t.Fatalf("%s: swaks: %v\n%s", mode, err, out)
				}
			}
		})
		t.Run("submission needs TLS before AUTH", func(t *testing.T) {
			out, err := swaksPassword(t, ms.submission, "active@"+domain, "friend@elsewhere.test", password)
			if err == nil || strings.Contains(out, "queued") {
				t.Fatalf("AUTH without TLS: %v\n%s", err, out)
			}
		})
		t.Run("port 25 offers no AUTH", func(t *testing.T) {
			out, err := swaksTLS(t, ms.smtp, "--tls-optional", "nosend@"+domain, "friend@elsewhere.test", password)
			if err == nil || strings.Contains(out, "235 ") || strings.Contains(out, "queued") {
				t.Fatalf("AUTH on port 25: %v\n%s", err, out)
			}
		})
		t.Run("submission with a wrong password is refused", func(t *testing.T) {
			out, err := swaksTLS(t, ms.submission, "--tls", "active@"+domain, "friend@elsewhere.test", "wrong")
			if err == nil || !strings.Contains(out, "535 5.7.8") {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
		})
		// Direct, +tag and upper-case recipients, refused at RCPT time.
		for _, tc := range []struct{ rcpt, want string }{
			{"closed@" + domain, "550 5.2.1 <closed@example.test>: Recipient address rejected: Mailbox is closed"},
			{"closed+tag@" + domain, "550 5.2.1 <closed+tag@example.test>: Recipient address rejected: Mailbox is closed"},
			{"CLOSED@EXAMPLE.TEST", "550 5.2.1 <CLOSED@EXAMPLE.TEST>: Recipient address rejected: Mailbox is closed"},
			{"maint@" + domain, "450 4.2.1 <maint@example.test>: Recipient address rejected: Mailbox is temporarily unavailable"},
			{"Maint+x@" + domain, "450 4.2.1 <Maint+x@example.test>: Recipient address rejected: Mailbox is temporarily unavailable"},
			{"norecv@" + domain, "550 5.2.1 <norecv@example.test>: Recipient address rejected: Mailbox is not accepting messages"},
			{"norecv+list@" + domain, "550 5.2.1 <norecv+list@example.test>: Recipient address rejected: Mailbox is not accepting messages"},
		} {
			t.Run("mail to "+tc.rcpt, func(t *testing.T) {
				out, err := swaks(t, ms.smtp, "someone@elsewhere.test", tc.rcpt, false)
				if err == nil || !strings.Contains(out, tc.want) {
					t.Fatalf("swaks: %v; want %q in:\n%s", err, tc.want, out)
				}
			})
		}
		// Aliases pass the RCPT check (the alias is no account) and are
		// stopped after expansion by the transport map: a bounce for closed
		// and receive-suspended mailboxes, a deferral for maintenance.
		for _, tc := range []struct{ alias, target, status string }{
			{"alias-closed", "closed", "status=bounced (Mailbox is closed)"},
			{"alias-norecv", "norecv", "status=bounced (Mailbox is not accepting messages)"},
			{"alias-maint", "maint", "status=deferred (Mailbox is temporarily unavailable, try again later)"},
		} {
			t.Run("mail through "+tc.alias, func(t *testing.T) {
				out, err := swaks(t, ms.smtp, "someone@elsewhere.test", tc.alias+"@"+domain, false)
				if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
					t.Fatalf("swaks: %v\n%s", err, out)
				}
				ms.waitMaillog(t, "to=<"+tc.target+"@"+domain+">, orig_to=<"+tc.alias+"@"+domain+">", tc.status)
			})
		}
		// Local injection: sendmail (postdrop, pickup) never meets smtpd's
		// checks; the transport map still holds.
		for _, tc := range []struct{ rcpt, status string }{
			{"closed+local@" + domain, "status=bounced (Mailbox is closed)"},
			{"NORECV@" + domain, "status=bounced (Mailbox is not accepting messages)"},
			{"alias-maint@" + domain, "status=deferred (Mailbox is temporarily unavailable"},
			{"active@" + domain, "status=sent (mailstack)"},
		} {
			t.Run("sendmail to "+tc.rcpt, func(t *testing.T) {
				ms.sendmail(t, "someone@elsewhere.test", tc.rcpt)
				ms.waitMaillog(t, "to=<"+strings.ToLower(strings.Replace(tc.rcpt, "alias-", "", 1))+">", tc.status)
			})
		}
		t.Run("relay control comes before aupd", func(t *testing.T) {
			const rcpt = "relay-victim@elsewhere.test"
			// The postfix subtests run one at a time and the dovecot ones
			// send no recipient, so no other policy request can come in
			// between.
			before := ms.postfixRequests(t)
			out, err := swaks(t, ms.smtp, "someone@elsewhere.test", rcpt, false)
			if err == nil || !strings.Contains(out, "554 5.7.1 <"+rcpt+">: Relay access denied") {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			if n := ms.postfixRequests(t) - before; n != 0 {
				t.Errorf("aupd was asked about a relay attempt %v times", n)
			}
		})
		t.Run("mail to an active account is accepted", func(t *testing.T) {
			before := ms.postfixRequests(t)
			out, err := swaks(t, ms.smtp, "someone@elsewhere.test", "active+tag@"+domain, false)
			if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			// aupd was asked, so the relay check above counts for real.
			if n := ms.postfixRequests(t) - before; n < 1 {
				t.Errorf("aupd was not asked about mail to a local account (%v requests)", n)
			}
			ms.waitMaillog(t, "to=<active+tag@"+domain+">", "status=sent (mailstack)")
		})
	})

	t.Run("dovecot", func(t *testing.T) {
		t.Parallel()
		for _, acct := range []string{"suspended@" + domain, "locked@" + domain} {
			t.Run(acct, func(t *testing.T) {
				t.Parallel()
				if r := imapLogin(t, ms.imap, acct, password); !strings.HasPrefix(r, "NO [ALERT] ") {
					t.Errorf("IMAP login while refused: %q", r)
				} else {
					t.Logf("IMAP: %s", r)
				}
				if r := pop3Login(t, ms.pop3, acct, password); !strings.HasPrefix(r, "-ERR [AUTH] ") {
					t.Errorf("POP3 login while refused: %q", r)
				} else {
					t.Logf("POP3: %s", r)
				}
				// Reinstated.
				if strings.HasPrefix(acct, "locked@") {
					must(t)(st.SetStatus(ctx, acct, rules.StatusActive, time.Time{}, admin))
				} else {
					must(t)(st.Reinstate(ctx, acct, []rules.Service{rules.ServiceIMAP, rules.ServicePOP3}, admin))
				}
				if r := imapLogin(t, ms.imap, acct, password); !strings.HasPrefix(r, "OK ") {
					t.Errorf("IMAP login after reinstatement: %q", r)
				}
				if r := pop3Login(t, ms.pop3, acct, password); !strings.HasPrefix(r, "+OK") {
					t.Errorf("POP3 login after reinstatement: %q", r)
				}
			})
		}
		t.Run("wrong passwords reveal nothing", func(t *testing.T) {
			t.Parallel()
			// Locked, closed, suspended, maintenance, active and made-up
			// accounts: a wrong password gets the same bytes over IMAP, and
			// over POP3.
			probes := []string{"plocked", "pclosed", "psuspended", "pmaint", "active", "no-such-user"}
			var imapWant, pop3Want string
			for _, u := range probes {
				acct := u + "@" + domain
				i, p := imapLogin(t, ms.imap, acct, "Wrong-1"), pop3Login(t, ms.pop3, acct, "Wrong-1")
				if imapWant == "" {
					imapWant, pop3Want = i, p
					t.Logf("IMAP: %q, POP3: %q", i, p)
				}
				if i != imapWant || p != pop3Want {
					t.Errorf("%s, wrong password: IMAP %q, POP3 %q; %s got %q, %q", acct, i, p, probes[0], imapWant, pop3Want)
				}
			}
			if imapWant != "NO [AUTHENTICATIONFAILED] Authentication failed." || pop3Want != "-ERR [AUTH] Authentication failed." {
				t.Errorf("wrong-password replies %q, %q", imapWant, pop3Want)
			}
			// The reason is told after the right password.
			for u, want := range map[string]string{
				"plocked": "NO [ALERT] Account is locked.", "pclosed": "NO [ALERT] Account is closed.",
				"psuspended": "NO [ALERT] IMAP access is suspended", "pmaint": "NO [ALERT] Mailbox is under maintenance.",
			} {
				if r := imapLogin(t, ms.imap, u+"@"+domain, password); !strings.HasPrefix(r, want) {
					t.Errorf("%s, right password: %q; want %q", u, r, want)
				}
			}
			// A refusal does not end the connection (docs/dovecot.md).
			c, r := imapOpen(t, ms.imap, "plocked@"+domain, password)
			defer c.Close()
			if !strings.HasPrefix(r, "NO [ALERT] ") {
				t.Fatalf("locked account: %q", r)
			}
			if err := c.PrintfLine("a2 NOOP"); err != nil {
				t.Fatal(err)
			}
			for {
				line, err := c.ReadLine()
				if err != nil {
					t.Fatalf("the connection ended after a refusal: %v", err)
				}
				if strings.HasPrefix(line, "a2 ") {
					if !strings.HasPrefix(line, "a2 OK") {
						t.Errorf("NOOP after a refusal: %q", line)
					}
					break
				}
			}
		})
		t.Run("refusals behind a shared address", func(t *testing.T) {
			t.Parallel()
			// refused logs in to a locked account from ip, first passing
			// the client's own address (IMAP ID x-originating-ip) when one
			// is given, as webmail does, and returns how long it took.
			refused := func(ip, client string) time.Duration {
				start := time.Now()
				c := dialTextFrom(t, ms.imap, ip)
				defer c.Close()
				if _, err := c.ReadLine(); err != nil {
					t.Fatal(err)
				}
				if client != "" {
					if err := c.PrintfLine(`a0 ID ("x-originating-ip" %q)`, client); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.PrintfLine("a1 LOGIN %q %q", "plocked@"+domain, password); err != nil {
					t.Fatal(err)
				}
				for {
					line, err := c.ReadLine()
					if err != nil {
						t.Fatal(err)
					}
					if strings.HasPrefix(line, "a1 ") {
						if !strings.HasPrefix(line, "a1 NO [ALERT] ") {
							t.Fatalf("locked account: %q", line)
						}
						return time.Since(start)
					}
				}
			}
			// Refused logins from one address are slowed by Dovecot's auth
			// penalty ...
			var slowest time.Duration
			for range 3 {
				slowest = max(slowest, refused("127.0.8.1", ""))
			}
			if slowest < 1500*time.Millisecond {
				t.Errorf("no auth penalty from one address (slowest %s): the next check proves nothing", slowest)
			}
			// ... but a webmail host in login_trusted_networks that passes
			// each client's address gets no penalty for its users' refusals.
			for i := range 4 {
				if d := refused("127.0.9.1", fmt.Sprintf("192.0.2.%d", 10+i)); d > time.Second {
					t.Errorf("refusal %d through the trusted webmail host took %s", i+1, d)
				}
			}
		})
		t.Run("failed logins of a made-up address leave nothing lasting", func(t *testing.T) {
			t.Parallel()
			acct := "ghost@" + domain
			for i := range threshold {
				imapLogin(t, ms.imap, acct, fmt.Sprintf("guess-%d", i))
			}
			// aupd locks it out for the lockout's time, but creates no account.
			stateKey := store.AccountKey(ms.prefix, acct, "s")
			waitFor(t, "the transient lockout", func() bool {
				a, err := st.Account(ctx, acct)
				return err == nil && a.Status == rules.StatusLockout
			})
			a, err := st.Account(ctx, acct)
			if err != nil {
				t.Fatal(err)
			}
			if a.Exists {
				t.Errorf("failed logins created an account: %+v", a)
			}
			if ttl, err := ms.rdb.PTTL(ctx, stateKey).Result(); err != nil || ttl <= 0 || ttl > 30*time.Minute {
				t.Errorf("state of a made-up address expires in %s (%v); want with the lockout", ttl, err)
			}
			if ttl, err := ms.rdb.PTTL(ctx, store.AccountKey(ms.prefix, acct, "h")).Result(); err != nil || ttl != -2 {
				t.Errorf("history of a made-up address: ttl %s, %v; want none", ttl, err)
			}
			page, err := st.List(ctx, store.ListQuery{Company: "test", Limit: 100, Now: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range page.Accounts {
				if x.Address == acct {
					t.Errorf("the made-up address is listed: %+v", x)
				}
			}
		})
		t.Run("lockout", func(t *testing.T) {
			t.Parallel()
			acct := "victim@" + domain
			// An old password retried counts once.
			var wrongIMAP string
			for i := 0; i < threshold+1; i++ {
				wrongIMAP = imapLogin(t, ms.imap, acct, "old-password")
			}
			if !strings.HasPrefix(wrongIMAP, "NO ") {
				t.Fatalf("wrong password: %q", wrongIMAP)
			}
			waitFor(t, "one counted failure", func() bool { n, _ := ms.counter.Count(ctx, acct); return n == 1 })
			wrongPOP3 := pop3Login(t, ms.pop3, acct, "wrong-1")
			for i := 2; i < threshold; i++ {
				imapLogin(t, ms.imap, acct, fmt.Sprintf("wrong-%d", i))
			}
			// aupd's own counter sets the lockout through its store.
			var locked *store.Account
			waitFor(t, "the lockout", func() bool {
				a, err := st.Account(ctx, acct)
				if err != nil {
					t.Fatal(err)
				}
				locked = a
				return a.Status == rules.StatusLockout
			})
			if locked.LockoutUntil.IsZero() {
				t.Errorf("lockout without an end: %+v", locked)
			} else if d := time.Until(locked.LockoutUntil); d < 25*time.Minute || d > 31*time.Minute {
				t.Errorf("lockout ends in %s; want about 30m", d)
			}
			if si := locked.StatusInfo; si == nil || si.Reason != rules.ReasonLockout || si.Actor != "aupd" {
				t.Errorf("lockout status info: %+v", si)
			}
			if locked.Company != "test" {
				t.Errorf("locked-out account's company %q; want test, from its domain", locked.Company)
			}
			hist, err := st.History(ctx, acct, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(hist, func(e store.HistoryEntry) bool {
				return e.Action == "status" && e.Status == string(rules.StatusLockout) && e.Reason == rules.ReasonLockout && e.Actor == "aupd"
			}) {
				t.Errorf("no lockout entry in the history: %+v", hist)
			}
			if n, err := ms.counter.Count(ctx, acct); err != nil || n != 0 {
				t.Errorf("failure count after the lockout: %d, %v; want it reset", n, err)
			}
			// The right password is now refused with the wrong password's
			// message.
			if r := imapLogin(t, ms.imap, acct, password); r != wrongIMAP {
				t.Errorf("IMAP, right password during lockout: %q; a wrong one got %q", r, wrongIMAP)
			}
			if r := pop3Login(t, ms.pop3, acct, password); r != wrongPOP3 {
				t.Errorf("POP3, right password during lockout: %q; a wrong one got %q", r, wrongPOP3)
			}
			// SMTP AUTH is refused too.
			if out, err := swaksTLS(t, ms.submission, "--tls", acct, "friend@elsewhere.test", password); err == nil || !strings.Contains(out, "535 5.7.8") {
				t.Errorf("SMTP AUTH during lockout: %v\n%s", err, out)
			}
			// An admin ends the lockout early; the right password works.
			must(t)(st.SetStatus(ctx, acct, rules.StatusActive, time.Time{}, admin))
			if r := imapLogin(t, ms.imap, acct, password); !strings.HasPrefix(r, "OK ") {
				t.Errorf("IMAP after the lockout: %q", r)
			}
		})
		t.Run("session locks", func(t *testing.T) {
			t.Parallel()
			acct := "popper@" + domain
			const inUsePOP3 = "-ERR [IN-USE] Mailbox locked"
			// POP3 holds the mailbox: no other POP3, no IMAP.
			held, r := pop3Open(t, ms.pop3, acct, password)
			if !strings.HasPrefix(r, "+OK") {
				t.Fatalf("first POP3 session: %q", r)
			}
			ms.waitLocks(t, acct, 1)
			if r := pop3Once(t, ms.pop3, acct, password); r != inUsePOP3 {
				t.Errorf("POP3 while POP3 holds the mailbox: %q; want %q", r, inUsePOP3)
			}
			if r := imapOnce(t, ms.imap, acct, password); !strings.Contains(r, "[IN-USE] Mailbox locked") {
				t.Errorf("IMAP while POP3 holds the mailbox: %q", r)
			}
			// The POP3 session ends (QUIT): its lock is released within a
			// second.
			ms.released(t, acct, "POP3 QUIT", releaseNormal, 0, func() {
				_ = held.PrintfLine("QUIT")
				_, _ = held.ReadLine()
			})
			held.Close()
			// IMAP holds it: another IMAP session shares it, POP3 waits.
			i1, r := imapOpen(t, ms.imap, acct, password)
			if !strings.HasPrefix(r, "OK") {
				t.Fatalf("IMAP session: %q", r)
			}
			i2, r := imapOpen(t, ms.imap, acct, password)
			if !strings.HasPrefix(r, "OK") {
				t.Fatalf("second IMAP session: %q", r)
			}
			ms.waitLocks(t, acct, 2)
			if r := pop3Once(t, ms.pop3, acct, password); r != inUsePOP3 {
				t.Errorf("POP3 while IMAP holds the mailbox: %q; want %q", r, inUsePOP3)
			}
			// The lease is renewed while the sessions live, beyond its
			// first term.
			lks := ms.waitLocks(t, acct, 2)
			waitFor(t, "the leases renewed past their first term", func() bool {
				now, err := ms.locks.List(ctx, acct)
				return err == nil && len(now) == 2 && now[0].ExpiresAt.After(lks[1].ExpiresAt.Add(time.Second))
			})
			// One logs out, the other's client just closes its end: both
			// released within a second.
			ms.released(t, acct, "IMAP LOGOUT", releaseNormal, 1, func() {
				_ = i1.PrintfLine("a2 LOGOUT")
				for {
					if l, err := i1.ReadLine(); err != nil || strings.HasPrefix(l, "a2 ") {
						break
					}
				}
			})
			i1.Close()
			// The client dies: its socket closes (FIN), no LOGOUT.
			ms.released(t, acct, "a killed IMAP client", releaseNormal, 0, func() { i2.Close() })
			if r := pop3Once(t, ms.pop3, acct, password); !strings.HasPrefix(r, "+OK") {
				t.Errorf("POP3 once the IMAP sessions ended: %q", r)
			}
			ms.waitLocks(t, acct, 0)

			// A client that vanishes without a FIN or RST (its socket
			// closed in TCP repair mode): the keepalive the post-login
			// program set ends the connection within its bound.
			c, r := pop3Open(t, ms.pop3, acct, password)
			if !strings.HasPrefix(r, "+OK") {
				t.Fatalf("POP3 session: %q", r)
			}
			ms.waitLocks(t, acct, 1)
			ms.released(t, acct, "a vanished POP3 client", testKeepalive.VanishBound()+releaseNormal, 0, func() { vanish(t, c) })

			// Webmail (the API) shares the mailbox like IMAP.
			wm, err := ms.locks.Acquire(ctx, acct, sessionlock.Webmail, 30*time.Second, "webmail test")
			if err != nil {
				t.Fatal(err)
			}
			if r := pop3Once(t, ms.pop3, acct, password); r != inUsePOP3 {
				t.Errorf("POP3 while webmail holds the mailbox: %q; want %q", r, inUsePOP3)
			}
			if r := imapOnce(t, ms.imap, acct, password); !strings.HasPrefix(r, "OK") {
				t.Errorf("IMAP while webmail holds the mailbox: %q", r)
			}
			ms.waitLocks(t, acct, 1)
			if _, err := ms.locks.Release(ctx, acct, wm.ID); err != nil {
				t.Fatal(err)
			}
		})
		// Not parallel: while the agent is down, every login is let in
		// without a lock (on_error: allow), which the other subtests
		// must not see. The parallel ones wait until this one is done.
		t.Run("the agent crashes and restarts", func(t *testing.T) {
			acct := "crash@" + domain
			held, r := pop3Open(t, ms.pop3, acct, password)
			if !strings.HasPrefix(r, "+OK") {
				t.Fatalf("POP3 session: %q", r)
			}
			first := ms.waitLocks(t, acct, 1)[0]
			// Killed (kill -9), the agent renews nothing: the lease
			// expires by itself although the session lives.
			ms.killAgent(t)
			waitFor(t, "the lease to expire", func() bool { return time.Now().After(first.ExpiresAt) })
			ms.waitLocks(t, acct, 0)
			// Restarted, it finds the session in its state file and takes
			// its lock again.
			ms.startAgent(t)
			ms.waitLocks(t, acct, 1)
			if r := imapOnce(t, ms.imap, acct, password); !inUse(r) {
				t.Errorf("IMAP while the adopted POP3 session holds the mailbox: %q", r)
			}
			// Killed again, and the session ends while it is down: the
			// next start releases the lock at once.
			ms.killAgent(t)
			_ = held.PrintfLine("QUIT")
			_, _ = held.ReadLine()
			held.Close()
			ms.waitLocks(t, acct, 1)
			ms.released(t, acct, "a session that ended while the agent was down, once it restarts", releaseNormal+time.Second, 0,
				func() { ms.startAgent(t) })
			if r := pop3Once(t, ms.pop3, acct, password); !strings.HasPrefix(r, "+OK") {
				t.Errorf("POP3 after the restart: %q", r)
			}
		})
	})
}

// waitMaillog waits until one line of Postfix's log has all of parts.
func (ms *mailstack) waitMaillog(t testing.TB, parts ...string) {
	t.Helper()
	var last string
	waitFor(t, fmt.Sprintf("maillog %q", parts), func() bool {
		b, err := os.ReadFile(filepath.Join(ms.dir, "postfix/maillog"))
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, parts[0]) {
				continue
			}
			last = line
			ok := true
			for _, p := range parts[1:] {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return true
			}
		}
		return false
	}, func() string { return "last matching line: " + last })
}

// sendmail injects a message locally, as a shell user's sendmail does.
func (ms *mailstack) sendmail(t testing.TB, from, to string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/sbin/sendmail", "-C", filepath.Join(ms.dir, "postfix/conf"), "-f", from, to)
	cmd.Stdin = strings.NewReader("From: " + from + "\nTo: " + to + "\nSubject: local injection\n\nhello\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
}

// waitLocks waits until aupd holds n session locks on acct.
func (ms *mailstack) waitLocks(t testing.TB, acct string, n int) []sessionlock.Lock {
	t.Helper()
	var got []sessionlock.Lock
	waitFor(t, fmt.Sprintf("%d session locks on %s", n, acct), func() bool {
		lks, err := ms.locks.List(context.Background(), acct)
		if err != nil {
			t.Fatal(err)
		}
		got = lks
		return len(lks) == n
	}, func() string { return fmt.Sprintf("%+v", got) })
	return got
}

// releaseNormal is the documented bound on the release of a session that
// ends (docs/dovecot.md): a second.
const releaseNormal = time.Second

// released runs end, which ends one of acct's sessions, and checks that
// its lock is gone within bound, leaving left locks.
func (ms *mailstack) released(t testing.TB, acct, what string, bound time.Duration, left int, end func()) {
	t.Helper()
	start := time.Now()
	end()
	var took time.Duration
	for {
		lks, err := ms.locks.List(context.Background(), acct)
		if err != nil {
			t.Fatal(err)
		}
		took = time.Since(start)
		if len(lks) == left {
			break
		}
		if took > bound+30*time.Second {
			t.Fatalf("%s: the lock is still held after %s: %+v", what, took, lks)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	t.Logf("%s: released in %s (bound %s)", what, took.Round(time.Millisecond), bound)
	if took > bound {
		t.Errorf("%s: released in %s; the documented bound is %s", what, took.Round(time.Millisecond), bound)
	}
}

// vanish makes the client end of c disappear without a FIN or RST: the
// socket is put in TCP repair mode (root only), in which close sends
// nothing.
func vanish(t testing.TB, c *textproto.Conn) {
	t.Helper()
	conn := textConns.take(t, c)
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpRepair, 1)
	}); err != nil || serr != nil {
		t.Fatalf("TCP_REPAIR: %v %v", err, serr)
	}
	conn.Close()
}

// tcpRepair is TCP_REPAIR (linux/tcp.h).
const tcpRepair = 19

// textConns remembers the connection under each textproto.Conn, for vanish.
var textConns = &connMap{m: map[*textproto.Conn]net.Conn{}}

type connMap struct {
	mu sync.Mutex
	m  map[*textproto.Conn]net.Conn
}

func (cm *connMap) put(tc *textproto.Conn, c net.Conn) {
	cm.mu.Lock()
	cm.m[tc] = c
	cm.mu.Unlock()
}

func (cm *connMap) take(t testing.TB, tc *textproto.Conn) net.Conn {
	t.Helper()
	cm.mu.Lock()
	defer cm.mu.Unlock()
	c, ok := cm.m[tc]
	if !ok {
		t.Fatal("no connection under this textproto.Conn")
	}
	delete(cm.m, tc)
	return c
}

// killAgent kills (SIGKILL) the session lock agent of the mail stack.
func (ms *mailstack) killAgent(t testing.TB) {
	t.Helper()
	pid := ms.agentPID(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the agent (%d): %v", pid, err)
	}
	waitFor(t, "the agent to die", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || bytes.Contains(b, []byte(") Z "))
	})
}

// startAgent starts the agent again, as scripts/mailstack does.
func (ms *mailstack) startAgent(t testing.TB) {
	t.Helper()
	dv := filepath.Join(ms.dir, "dovecot")
	sock := filepath.Join(dv, "sessiond/agent.sock")
	_ = os.Remove(sock)
	logf, err := os.OpenFile(filepath.Join(dv, "sessiond.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(dv, "bin/aupd-sessiond"), "agent", "-debug", "-config", filepath.Join(dv, "sessiond.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }() // reaped when it exits (mailstack stop)
	if err := os.WriteFile(filepath.Join(dv, "sessiond.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent's socket", func() bool {
		fi, err := os.Stat(sock)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	})
}

func (ms *mailstack) agentPID(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ms.dir, "dovecot/sessiond.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// swaks sends one message, without AUTH (port 25).
func swaks(t testing.TB, addr, from, to string, auth bool) (string, error) {
	t.Helper()
	if auth {
		return swaksTLS(t, addr, "--tls", from, to, password)
	}
	return runSwaks(t, "--server", addr, "--from", from, "--to", to)
}

// swaksPassword authenticates as from (PLAIN) without TLS.
func swaksPassword(t testing.TB, addr, from, to, pw string) (string, error) {
	t.Helper()
	return runSwaks(t, "--server", addr, "--from", from, "--to", to,
		"--auth", "PLAIN", "--auth-user", from, "--auth-password", pw)
}

// swaksTLS authenticates as from (PLAIN) over TLS: mode is --tls
// (STARTTLS), --tlsc (TLS on connect) or --tls-optional.
func swaksTLS(t testing.TB, addr, mode, from, to, pw string) (string, error) {
	t.Helper()
	return runSwaks(t, "--server", addr, mode, "--from", from, "--to", to,
		"--auth", "PLAIN", "--auth-user", from, "--auth-password", pw)
}

func runSwaks(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return runSwaksFrom(t, sourceIP(), args...)
}

// runSwaksFrom runs swaks from the loopback address ip.
func runSwaksFrom(t testing.TB, ip string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append(args, "--timeout", "30", "--helo", "client.elsewhere.test", "--local-interface", ip)
	out, err := exec.CommandContext(ctx, "swaks", args...).CombinedOutput()
	return string(out), err
}

// inUse reports whether a login was refused by a session lock.
func inUse(reply string) bool { return strings.Contains(reply, "[IN-USE] Mailbox locked") }

// retryInUse repeats a login refused by a session lock for a moment:
// the tests that are not about session locks log in to one mailbox one
// session after the other, and the agent releases a lock within a second
// of a session's end.
func retryInUse(login func() string) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := login()
		if !inUse(r) || time.Now().After(deadline) {
			return r
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// imapLogin logs in and out and returns the tagged reply to LOGIN without
// its tag.
func imapLogin(t testing.TB, addr, user, pw string) string {
	t.Helper()
	defer func(start time.Time) { t.Logf("imap login %s took %s", user, time.Since(start)) }(time.Now())
	return retryInUse(func() string { return imapOnce(t, addr, user, pw) })
}

// imapOnce logs in once and out; a refusal by the session lock (an
// untagged BYE) is returned as it is.
func imapOnce(t testing.TB, addr, user, pw string) string {
	t.Helper()
	c, r := imapOpen(t, addr, user, pw)
	defer c.Close()
	if strings.HasPrefix(r, "OK") {
		_ = c.PrintfLine("a2 LOGOUT")
	}
	return r
}

// imapOpen logs in and returns the open session with the reply to LOGIN
// (without its tag and capabilities), or the BYE that ended it.
func imapOpen(t testing.TB, addr, user, pw string) (*textproto.Conn, string) {
	t.Helper()
	c := dialText(t, addr)
	if _, err := c.ReadLine(); err != nil {
		t.Fatalf("imap greeting: %v", err)
	}
	if err := c.PrintfLine("a1 LOGIN %q %q", user, pw); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := c.ReadLine()
		if err != nil {
			t.Fatalf("imap login: %v", err)
		}
		if strings.HasPrefix(line, "* BYE ") {
			return c, line
		}
		if r, ok := strings.CutPrefix(line, "a1 "); ok {
			// Strip the capability list an OK carries.
			if strings.HasPrefix(r, "OK [CAPABILITY") {
				r = "OK " + r[strings.Index(r, "]")+2:]
			}
			return c, r
		}
	}
}

// pop3Login logs in with USER/PASS and returns the reply to PASS.
func pop3Login(t testing.TB, addr, user, pw string) string {
	t.Helper()
	defer func(start time.Time) { t.Logf("pop3 login %s took %s", user, time.Since(start)) }(time.Now())
	return retryInUse(func() string { return pop3Once(t, addr, user, pw) })
}

// pop3Once logs in once and quits.
func pop3Once(t testing.TB, addr, user, pw string) string {
	t.Helper()
	c, line := pop3Open(t, addr, user, pw)
	defer c.Close()
	if strings.HasPrefix(line, "+OK") {
		_ = c.PrintfLine("QUIT")
		_, _ = c.ReadLine()
	}
	return line
}

// pop3Open logs in and returns the open session and the reply to PASS.
func pop3Open(t testing.TB, addr, user, pw string) (*textproto.Conn, string) {
	t.Helper()
	c := dialText(t, addr)
	if _, err := c.ReadLine(); err != nil {
		t.Fatalf("pop3 greeting: %v", err)
	}
	if err := c.PrintfLine("USER %s", user); err != nil {
		t.Fatal(err)
	}
	if line, err := c.ReadLine(); err != nil || !strings.HasPrefix(line, "+OK") {
		t.Fatalf("pop3 USER: %q, %v", line, err)
	}
	if err := c.PrintfLine("PASS %s", pw); err != nil {
		t.Fatal(err)
	}
	line, err := c.ReadLine()
	if err != nil {
		t.Fatalf("pop3 PASS: %v", err)
	}
	return c, line
}

// sourceIP returns a loopback address not used before by this test
// process. Dovecot delays failed logins per client address (auth penalty:
// 2, 4, 8, up to 15 s); a fresh address per login keeps the tests fast and
// shows that aupd's lockout counts per account, whatever the address.
var sourceIP = func() func() string {
	var mu sync.Mutex
	n := 0
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		n++
		return fmt.Sprintf("127.0.%d.%d", 10+n/250, 1+n%250)
	}
}()

func dialText(t testing.TB, addr string) *textproto.Conn {
	t.Helper()
	return dialTextFrom(t, addr, sourceIP())
}

// dialTextFrom connects from the loopback address ip.
func dialTextFrom(t testing.TB, addr, ip string) *textproto.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	tc := textproto.NewConn(conn)
	textConns.put(tc, conn)
	return tc
}

// waitGreeting polls addr until it greets with prefix.
func waitGreeting(t testing.TB, addr, prefix string) {
	t.Helper()
	var last error
	waitFor(t, addr+" greeting", func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			last = err
			return false
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, prefix) {
			last = fmt.Errorf("greeting %q, %w", line, err)
			return false
		}
		return true
	}, func() string { return fmt.Sprint(last) })
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(t testing.TB, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			d := ""
			for _, f := range detail {
				d += ": " + f()
			}
			t.Fatalf("timed out waiting for %s%s", what, d)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// freePorts returns n loopback addresses that were free a moment ago.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var lns []net.Listener
	var addrs []string
	for i := 0; i < n; i++ {
		ln := listen(t)
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// must fails the test if a store operation failed.
func must(t testing.TB) func(*store.Op, error) {
	t.Helper()
	return func(_ *store.Op, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
