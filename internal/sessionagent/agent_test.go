package sessionagent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aupd/aupd/internal/api"
	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/sessionlock"
	"github.com/aupd/aupd/internal/testutil"
)

// env is a real aupd session-lock API (the handler aupd mounts, behind its
// token guard, on real Redis under a prefix of the test's own) and the
// Locks behind it, to look at.
type env struct {
	url, token string
	locks      *sessionlock.Locks
	srv        *httptest.Server
}

func newEnv(t testing.TB) *env {
	t.Helper()
	rdb, prefix := testutil.Redis(t)
	locks, err := sessionlock.New(rdb, sessionlock.Config{KeyPrefix: prefix, MinLease: time.Second, MaxLease: time.Hour},
		sessionlock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	token := testutil.RandomHex(16)
	tokens, err := api.NewTokens(auth.Config{Tokens: []auth.TokenConfig{
		{Name: "sessiond", Role: auth.RoleViewer, Hash: auth.HashToken(token)}}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	guarded := api.GuardTokens(tokens, auth.PermSessionLock, sessionlock.NewHandler(locks, nil))
	for _, r := range sessionlock.Routes() {
		mux.Handle(r, guarded)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{url: srv.URL, token: token, locks: locks, srv: srv}
}

// config is an agent's settings in dir.
func (e *env) config(dir string, lease, renew time.Duration) Config {
	return Config{URL: e.url, Socket: filepath.Join(dir, "agent.sock"), StateFile: filepath.Join(dir, "state/locks"),
		Lease: lease, RenewEvery: renew, Holder: "test"}
}

// agent runs an agent until the test ends or stop is called.
type agent struct {
	cfg  Config
	stop func()
}

func startAgent(t testing.TB, e *env, cfg Config) *agent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, ok := t.(*testing.B); ok {
		log = nil
	}
	go func() {
		done <- Run(ctx, cfg, Options{Logger: log, Token: e.token, OnReady: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("agent: %v", err)
	}
	stopped := false
	a := &agent{cfg: cfg}
	a.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
	t.Cleanup(a.stop)
	return a
}

// child is a live process standing for an imap or pop3 process.
type child struct {
	cmd   *exec.Cmd
	pidfd int
	done  chan struct{}
}

func startChild(t testing.TB) *child {
	t.Helper()
	cmd := exec.Command("sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.pidfd = fd
	t.Cleanup(func() { c.kill(); unix.Close(fd) })
	return c
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

func (a *agent) ask(t testing.TB, protocol, user string, c *child) (Result, error) {
	t.Helper()
	return Ask(a.cfg.Socket, 10*time.Second, protocol, user, "192.0.2.1", c.pidfd)
}

// waitLocks waits until account has n locks.
func (e *env) waitLocks(t testing.TB, account string, n int) []sessionlock.Lock {
	t.Helper()
	var got []sessionlock.Lock
	waitFor(t, fmt.Sprintf("%d locks on %s", n, account), func() bool {
		lks, err := e.locks.List(context.Background(), account)
		if err != nil {
			t.Fatal(err)
		}
		got = lks
		return len(lks) == n
	})
	return got
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

const mbox = "alice@example.test"

func TestLocksFollowProcesses(t *testing.T) {
	e := newEnv(t)
	a := startAgent(t, e, e.config(t.TempDir(), time.Minute, 20*time.Second))
	p1, p2, p3 := startChild(t), startChild(t), startChild(t)

	// Two IMAP sessions share the mailbox; POP3 is refused.
	for _, c := range []*child{p1, p2} {
		if r, err := a.ask(t, "imap", "Alice@Example.TEST", c); r != Granted || err != nil {
			t.Fatalf("imap: %q, %v", r, err)
		}
	}
	lks := e.waitLocks(t, mbox, 2)
	if lks[0].Protocol != sessionlock.IMAP || !strings.Contains(lks[0].Holder, "dovecot imap on test from 192.0.2.1") {
		t.Errorf("lock: %+v", lks[0])
	}
	if r, err := a.ask(t, "pop3", mbox, p3); r != InUse || err != nil {
		t.Fatalf("pop3 while imap holds: %q, %v", r, err)
	}
	// A process that exits gives its lock up; nothing else does.
	p1.kill()
	e.waitLocks(t, mbox, 1)
	p2.kill()
	e.waitLocks(t, mbox, 0)
	// Now POP3 holds it, exclusively.
	if r, err := a.ask(t, "pop3", mbox, p3); r != Granted || err != nil {
		t.Fatalf("pop3: %q, %v", r, err)
	}
	p4 := startChild(t)
	if r, err := a.ask(t, "imap", mbox, p4); r != InUse || err != nil {
		t.Fatalf("imap while pop3 holds: %q, %v", r, err)
	}
	p3.kill()
	e.waitLocks(t, mbox, 0)
	waitFor(t, "no sessions in the agent", func() bool { return sessionsIn(t, a.cfg.StateFile) == 0 })
}

// sessionsIn counts the live locks in a state file.
func sessionsIn(t testing.TB, path string) int {
	m, err := readJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

func TestAlreadyExitedProcess(t *testing.T) {
	e := newEnv(t)
	a := startAgent(t, e, e.config(t.TempDir(), time.Minute, 20*time.Second))
	c := startChild(t)
	c.kill()
	if r, err := a.ask(t, "pop3", mbox, c); err == nil {
		t.Fatalf("a lock for a process that is gone: %q", r)
	}
	e.waitLocks(t, mbox, 0)
}

func TestRenewals(t *testing.T) {
	e := newEnv(t)
	a := startAgent(t, e, e.config(t.TempDir(), 2*time.Second, 500*time.Millisecond))
	c := startChild(t)
	if r, err := a.ask(t, "pop3", mbox, c); r != Granted || err != nil {
		t.Fatalf("pop3: %q, %v", r, err)
	}
	first := e.waitLocks(t, mbox, 1)[0]
	// The lease moves on, past its first term, while the process lives.
	waitFor(t, "the lease renewed past its first term", func() bool {
		lks, err := e.locks.List(context.Background(), mbox)
		return err == nil && len(lks) == 1 && lks[0].ExpiresAt.After(first.ExpiresAt.Add(time.Second))
	})
	// A lock lost (deleted behind the agent's back) is taken again.
	if _, err := e.locks.Release(context.Background(), mbox, first.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lost lock taken again", func() bool {
		lks, err := e.locks.List(context.Background(), mbox)
		return err == nil && len(lks) == 1 && lks[0].ID != first.ID
	})
	c.kill()
	e.waitLocks(t, mbox, 0)
}

func TestRestartAdoptsOrReleases(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	cfg := e.config(dir, time.Minute, 20*time.Second)
	a := startAgent(t, e, cfg)
	alive, dies := startChild(t), startChild(t)
	const bob = "bob@example.test"
	if r, err := a.ask(t, "pop3", mbox, alive); r != Granted || err != nil {
		t.Fatalf("pop3: %q, %v", r, err)
	}
	if r, err := a.ask(t, "pop3", bob, dies); r != Granted || err != nil {
		t.Fatalf("pop3: %q, %v", r, err)
	}
	a.stop()
	// Stopping keeps the locks; a session ends while the agent is down.
	dies.kill()
	e.waitLocks(t, mbox, 1)
	e.waitLocks(t, bob, 1)
	if n := sessionsIn(t, cfg.StateFile); n != 2 {
		t.Fatalf("state file holds %d locks; want 2", n)
	}
	a = startAgent(t, e, cfg)
	// The dead session's lock is released at once; the live one is kept
	// and still released when its process exits.
	e.waitLocks(t, bob, 0)
	lks := e.waitLocks(t, mbox, 1)
	if r, err := a.ask(t, "imap", mbox, startChild(t)); r != InUse || err != nil {
		t.Fatalf("imap while the adopted pop3 holds: %q, %v", r, err)
	}
	alive.kill()
	e.waitLocks(t, mbox, 0)
	_ = lks
}

func TestRestartWithAReusedPid(t *testing.T) {
	// A state file whose process has another start time (its pid was used
	// again) is released, not adopted.
	e := newEnv(t)
	dir := t.TempDir()
	cfg := e.config(dir, time.Minute, 20*time.Second)
	id, err := e.locks.Acquire(context.Background(), mbox, sessionlock.POP3, time.Minute, "old run")
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t)
	st, err := startTime(c.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o700); err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("+ %s %d %d pop3 %s\n", id.ID, c.cmd.Process.Pid, st+1, mbox)
	if err := os.WriteFile(cfg.StateFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	startAgent(t, e, cfg)
	e.waitLocks(t, mbox, 0)
}

func TestAupdDown(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t.TempDir(), time.Minute, 20*time.Second)
	cfg.RequestTimeout = 2 * time.Second
	a := startAgent(t, e, cfg)
	e.srv.Close()
	r, err := a.ask(t, "imap", mbox, startChild(t))
	if err == nil || !strings.Contains(err.Error(), "acquire") {
		t.Fatalf("with aupd down: %q, %v; want an error", r, err)
	}
}

func TestAgentDown(t *testing.T) {
	r, err := Ask(filepath.Join(t.TempDir(), "none.sock"), time.Second, "imap", mbox, "", 0)
	if err == nil {
		t.Fatalf("no agent: %q; want an error", r)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	a := startAgent(t, e, e.config(t.TempDir(), time.Minute, 20*time.Second))
	c := startChild(t)
	for _, tt := range []struct{ proto, user string }{{"smtp", mbox}, {"imap", ""}, {"imap", "a b@example.test"}} {
		if r, err := a.ask(t, tt.proto, tt.user, c); err == nil {
			t.Errorf("%q %q: %q; want an error", tt.proto, tt.user, r)
		}
	}
	// A file descriptor that is no pidfd.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if r, err := Ask(a.cfg.Socket, time.Second, "imap", mbox, "", int(f.Fd())); err == nil {
		t.Errorf("not a pidfd: %q; want an error", r)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
