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
	"testing"
	"time"

	"github.com/aupd/aupd/internal/app"
	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/policy/dovecot"
	"github.com/aupd/aupd/internal/policy/lockout"
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
	counter                      *lockout.Counter
	httpAddr                     string // aupd's HTTP listener (/metrics)
	smtp, submission, imap, pop3 string
}

// users of the private Dovecot; all have the same password.
var users = []string{"active", "nosend", "closed", "maint", "norecv", "suspended", "locked", "victim"}

func startMailstack(t *testing.T) *mailstack {
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
	cfg.Redis.Addrs = []string{testutil.RedisAddr()}
	cfg.Redis.Prefix = prefix
	cfg.Redis.Autostart = false
	cfg.Notifier.EMLDir = t.TempDir()
	cfg.Policy.Postfix.Listen = "127.0.0.1:0"
	cfg.Policy.Dovecot.Listen = "127.0.0.1:0"
	cfg.Policy.Dovecot.APIKey = dovecot.Secret(apiKey)
	cfg.Policy.Lockout = lcfg
	cfg.Companies = []companies.Company{{ID: "test", Domains: []string{domain}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	info := runAupd(t, cfg, log)

	lcfg.KeyPrefix = prefix
	ctr, err := lockout.New(rdb, lcfg, noLocker{t}, lockout.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// The mail servers, on free loopback ports.
	dir, err := os.MkdirTemp("", "aupd-mailstack-")
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 4)
	ms := &mailstack{st: store.New(rdb, prefix), counter: ctr, httpAddr: info.HTTPAddr,
		smtp: ports[0], submission: ports[1], imap: ports[2], pop3: ports[3]}
	var pairs []string
	for _, u := range users {
		pairs = append(pairs, u+"@"+domain+":"+password)
	}
	env := append(os.Environ(),
		"MS_SMTP_PORT="+port(ms.smtp), "MS_SUBMISSION_PORT="+port(ms.submission),
		"MS_IMAP_PORT="+port(ms.imap), "MS_POP3_PORT="+port(ms.pop3),
		"MS_POLICY=inet:"+info.PostfixAddr,
		"MS_AUTH_POLICY_URL=http://"+info.DovecotAddr+"/",
		"MS_AUTH_POLICY_KEY="+apiKey,
		"MS_DOMAINS="+domain,
		"MS_USERS="+strings.Join(pairs, " "),
	)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("AUPD_MAILSTACK_LOGS") != "" {
			for _, f := range []string{"postfix/maillog", "dovecot/dovecot.log"} {
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
		waitGreeting(t, addr, greeting)
	}
	return ms
}

// runAupd runs aupd until the test ends and returns where it listens.
func runAupd(t *testing.T, cfg *config.Config, log *slog.Logger) app.Info {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Options{Config: cfg, Logger: log, OnReady: func(i app.Info) { ready <- i }})
	}()
	var info app.Info
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("aupd: %v", err)
		}
	})
	if info.PostfixAddr == "" || info.DovecotAddr == "" {
		t.Fatalf("aupd runs without a policy server: %+v", info)
	}
	return info
}

// noLocker is the Locker of the test's read-only counter: aupd's own
// counter locks accounts out, never the test's.
type noLocker struct{ t *testing.T }

func (l noLocker) Lockout(context.Context, string, time.Time, string) error {
	l.t.Error("the test's lockout counter was asked to lock an account out")
	return errors.New("not the test's to lock out")
}

// postfixRequests returns how many Postfix policy requests aupd has
// answered, from its metrics.
func (ms *mailstack) postfixRequests(t *testing.T) float64 {
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
		if !strings.HasPrefix(line, "aupd_policy_requests_total{") || !strings.Contains(line, `server="postfix"`) {
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
	must(t)(st.Suspend(ctx, "nosend@"+domain, []rules.Service{rules.ServiceSend}, admin))
	must(t)(st.SetStatus(ctx, "closed@"+domain, rules.StatusClosed, time.Time{}, admin))
	must(t)(st.SetStatus(ctx, "maint@"+domain, rules.StatusMaintenance, time.Time{}, admin))
	must(t)(st.Suspend(ctx, "norecv@"+domain, []rules.Service{rules.ServiceReceive}, admin))
	must(t)(st.Suspend(ctx, "suspended@"+domain, []rules.Service{rules.ServiceIMAP, rules.ServicePOP3}, admin))
	must(t)(st.SetStatus(ctx, "locked@"+domain, rules.StatusLocked, time.Time{}, admin))

	t.Run("postfix", func(t *testing.T) {
		t.Parallel()
		t.Run("submission by a send-suspended user is refused", func(t *testing.T) {
			out, err := swaks(t, ms.submission, "nosend@"+domain, "friend@elsewhere.test", true)
			if err == nil {
				t.Fatalf("swaks succeeded:\n%s", out)
			}
			want := "554 5.7.1 <friend@elsewhere.test>: Recipient address rejected: Sending is suspended for this account"
			if !strings.Contains(out, want) {
				t.Fatalf("want %q in:\n%s", want, out)
			}
			if !strings.Contains(out, "235 2.7.0 Authentication successful") {
				t.Errorf("SMTP AUTH did not succeed:\n%s", out)
			}
		})
		t.Run("submission by a normal user is accepted", func(t *testing.T) {
			out, err := swaks(t, ms.submission, "active@"+domain, "friend@elsewhere.test", true)
			if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
		})
		t.Run("submission with a wrong password is refused", func(t *testing.T) {
			out, err := swaksPassword(t, ms.submission, "active@"+domain, "friend@elsewhere.test", "wrong")
			if err == nil || !strings.Contains(out, "535 5.7.8") {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
		})
		for _, tc := range []struct{ rcpt, want string }{
			{"closed@" + domain, "550 5.2.1 <closed@example.test>: Recipient address rejected: Mailbox is closed"},
			{"maint@" + domain, "450 4.2.1 <maint@example.test>: Recipient address rejected: Mailbox is temporarily unavailable"},
			{"norecv@" + domain, "550 5.2.1 <norecv@example.test>: Recipient address rejected: Mailbox is not accepting messages"},
		} {
			t.Run("mail to "+tc.rcpt, func(t *testing.T) {
				out, err := swaks(t, ms.smtp, "someone@elsewhere.test", tc.rcpt, false)
				if err == nil || !strings.Contains(out, tc.want) {
					t.Fatalf("swaks: %v; want %q in:\n%s", err, tc.want, out)
				}
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
			out, err := swaks(t, ms.smtp, "someone@elsewhere.test", "active@"+domain, false)
			if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			// aupd was asked, so the relay check above counts for real.
			if n := ms.postfixRequests(t) - before; n < 1 {
				t.Errorf("aupd was not asked about mail to a local account (%v requests)", n)
			}
		})
	})

	t.Run("dovecot", func(t *testing.T) {
		t.Parallel()
		for _, acct := range []string{"suspended@" + domain, "locked@" + domain} {
			t.Run(acct, func(t *testing.T) {
				t.Parallel()
				if r := imapLogin(t, ms.imap, acct, password); !strings.HasPrefix(r, "NO ") {
					t.Errorf("IMAP login while refused: %q", r)
				} else {
					t.Logf("IMAP: %s", r)
				}
				if r := pop3Login(t, ms.pop3, acct, password); !strings.HasPrefix(r, "-ERR ") {
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
			if out, err := swaks(t, ms.submission, acct, "friend@elsewhere.test", true); err == nil || !strings.Contains(out, "535 5.7.8") {
				t.Errorf("SMTP AUTH during lockout: %v\n%s", err, out)
			}
			// An admin ends the lockout early; the right password works.
			must(t)(st.SetStatus(ctx, acct, rules.StatusActive, time.Time{}, admin))
			if r := imapLogin(t, ms.imap, acct, password); !strings.HasPrefix(r, "OK ") {
				t.Errorf("IMAP after the lockout: %q", r)
			}
		})
	})
}

// swaks sends one message; with auth, it authenticates as from (PLAIN).
func swaks(t *testing.T, addr, from, to string, auth bool) (string, error) {
	t.Helper()
	if auth {
		return swaksPassword(t, addr, from, to, password)
	}
	return runSwaks(t, "--server", addr, "--from", from, "--to", to)
}

func swaksPassword(t *testing.T, addr, from, to, pw string) (string, error) {
	t.Helper()
	return runSwaks(t, "--server", addr, "--from", from, "--to", to,
		"--auth", "PLAIN", "--auth-user", from, "--auth-password", pw)
}

func runSwaks(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append(args, "--timeout", "30", "--helo", "client.elsewhere.test", "--local-interface", sourceIP())
	out, err := exec.CommandContext(ctx, "swaks", args...).CombinedOutput()
	return string(out), err
}

// imapLogin logs in and out and returns the tagged reply to LOGIN without
// its tag.
func imapLogin(t *testing.T, addr, user, pw string) string {
	t.Helper()
	defer func(start time.Time) { t.Logf("imap login %s took %s", user, time.Since(start)) }(time.Now())
	c := dialText(t, addr)
	defer c.Close()
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
		if r, ok := strings.CutPrefix(line, "a1 "); ok {
			if strings.HasPrefix(r, "OK") {
				_ = c.PrintfLine("a2 LOGOUT")
			}
			// Strip the capability list an OK carries.
			if strings.HasPrefix(r, "OK [CAPABILITY") {
				r = "OK " + r[strings.Index(r, "]")+2:]
			}
			return r
		}
	}
}

// pop3Login logs in with USER/PASS and returns the reply to PASS.
func pop3Login(t *testing.T, addr, user, pw string) string {
	t.Helper()
	defer func(start time.Time) { t.Logf("pop3 login %s took %s", user, time.Since(start)) }(time.Now())
	c := dialText(t, addr)
	defer c.Close()
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
	if strings.HasPrefix(line, "+OK") {
		_ = c.PrintfLine("QUIT")
	}
	return line
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

func dialText(t *testing.T, addr string) *textproto.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(sourceIP())}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	return textproto.NewConn(conn)
}

// waitGreeting polls addr until it greets with prefix.
func waitGreeting(t *testing.T, addr, prefix string) {
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
			last = fmt.Errorf("greeting %q, %v", line, err)
			return false
		}
		return true
	}, func() string { return fmt.Sprint(last) })
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(t *testing.T, what string, cond func() bool, detail ...func() string) {
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

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// freePorts returns n loopback addresses that were free a moment ago.
func freePorts(t *testing.T, n int) []string {
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
func must(t *testing.T) func(*store.Op, error) {
	t.Helper()
	return func(_ *store.Op, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// testWriter sends log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
