package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// TestLookupsBoundedWhenRedisHangs: a Redis that stops answering (SIGSTOP:
// its connections stay open, nothing comes back) makes the Postfix policy
// server, its transport map and the Dovecot policy server answer their
// error reply within their lookup_timeout, not after go-redis's 5 s read
// timeout (measured before the client honoured context deadlines). POST
// /api/v1/decide has no lookup bound of its own: it fails once the 5 s
// read timeout passes. Once Redis goes on, the next requests are answered
// normally.
func TestLookupsBoundedWhenRedisHangs(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("redis-server is not installed (apt-get install redis-server): %v", err)
	}
	if testing.Short() {
		t.Skip("waits out the 5 s Redis read timeout once")
	}
	const lookup = 300 * time.Millisecond
	const bound = 1500 * time.Millisecond // well under the 5 s it took

	addr, redisProc := testutil.PrivateRedisProcess(t, testutil.FreePort(t))
	ns := testutil.NATSServer(t, "")
	cfg := testConfig(t, ns.ClientURL(), "aupt"+testutil.RandomHex(4))
	cfg.Redis.Addrs = []string{addr}
	cfg.Policy.Postfix.LookupTimeout = lookup
	cfg.Policy.Postfix.TransportListen = "127.0.0.1:0"
	cfg.Policy.Dovecot.LookupTimeout = lookup
	const token = "redis-hang-test-token"
	cfg.Auth.Tokens = []auth.TokenConfig{{Name: "webmail", Role: auth.RoleViewer, Hash: auth.HashToken(token)}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, natsURL: cfg.NATS.URL}
	h.run()
	// Cleanups run last first: Redis goes on before aupd stops.
	t.Cleanup(func() { _ = redisProc.Signal(syscall.SIGCONT) })

	policy := func() string {
		t.Helper()
		return postfixPolicy(t, h.info.PostfixAddr, "request=smtpd_access_policy\nprotocol_state=RCPT\n"+
			"sender=someone@elsewhere.test\nrecipient=bob@example.com\nclient_address=192.0.2.1\n\n")
	}
	transport := func() string {
		t.Helper()
		return socketmap(t, h.info.PostfixTransportAddr, "transport bob@example.com")
	}
	dovecot := func() int {
		t.Helper()
		resp, err := http.Post("http://"+h.info.DovecotAddr+"/?command=allow", "application/json",
			strings.NewReader(`{"login":"bob@example.com","user":"bob@example.com","protocol":"imap","remote":"192.0.2.1"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	decide := func() (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+h.info.HTTPAddr+"/api/v1/decide",
			strings.NewReader(`{"account":"bob@example.com","access":"login_webmail"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	normal := func(when string) {
		t.Helper()
		if got := policy(); got != "DUNNO" {
			t.Errorf("%s: policy answered %q, want DUNNO", when, got)
		}
		if got := transport(); got != "NOTFOUND " {
			t.Errorf("%s: transport map answered %q, want NOTFOUND", when, got)
		}
		if got := dovecot(); got != http.StatusOK {
			t.Errorf("%s: dovecot policy answered %d, want 200", when, got)
		}
		code, body := decide()
		var d api.DecideResponse
		if err := json.Unmarshal([]byte(body), &d); code != http.StatusOK || err != nil || d.Result != rules.Allow {
			t.Errorf("%s: decide answered %d %s, want 200 and allow", when, code, body)
		}
	}
	// Connections in the pool first, as in a running aupd.
	normal("before the pause")

	if err := redisProc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	timed := func(name string, fn func() string, want string) {
		t.Helper()
		start := time.Now()
		got := fn()
		took := time.Since(start)
		t.Logf("%s while Redis hangs: %q after %s (lookup_timeout %s)", name, got, took.Round(time.Millisecond), lookup)
		if got != want {
			t.Errorf("%s while Redis hangs answered %q, want %q", name, got, want)
		}
		if took > bound {
			t.Errorf("%s while Redis hangs took %s; lookup_timeout is %s", name, took, lookup)
		}
	}
	timed("postfix policy", policy, "DEFER_IF_PERMIT Service temporarily unavailable")
	timed("postfix transport map", transport, "TEMP account lookup failed")
	timed("dovecot policy", func() string { return fmt.Sprint(dovecot()) }, "503")
	// A second round: the connections the first round gave up on were
	// closed; the next lookups take other ones, or dial Redis anew (the
	// kernel still accepts a connection for a stopped redis-server).
	timed("postfix policy, again", policy, "DEFER_IF_PERMIT Service temporarily unavailable")
	timed("dovecot policy, again", func() string { return fmt.Sprint(dovecot()) }, "503")

	// decide has no lookup bound: its request's context has no deadline,
	// so go-redis's 5 s read timeout ends it.
	start := time.Now()
	code, body := decide()
	took := time.Since(start)
	t.Logf("decide while Redis hangs: %d after %s", code, took.Round(time.Millisecond))
	if code < 500 {
		t.Errorf("decide while Redis hangs answered %d %s, want an error", code, body)
	}
	if took > 8*time.Second {
		t.Errorf("decide while Redis hangs took %s, beyond the 5 s read timeout", took)
	}

	if err := redisProc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	normal("after the pause")
}

// postfixPolicy sends one policy delegation request and returns the
// action of its reply.
func postfixPolicy(t *testing.T, addr, req string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	var action string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read policy reply: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			return action
		}
		if v, ok := strings.CutPrefix(line, "action="); ok {
			action = v
		}
	}
}

// socketmap sends one socketmap request and returns its reply, without
// the netstring framing.
func socketmap(t *testing.T, addr, req string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(conn, "%d:%s,", len(req), req); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	var n int
	if _, err := fmt.Fscanf(r, "%d:", &n); err != nil {
		t.Fatalf("read socketmap reply: %v", err)
	}
	b := make([]byte, n+1)
	if _, err := io.ReadFull(r, b); err != nil || b[n] != ',' {
		t.Fatalf("read socketmap reply: %q %v", b, err)
	}
	return string(b[:n])
}
