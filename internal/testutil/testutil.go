// Package testutil starts and connects the real servers tests use: Redis
// (the local one, isolated by a random key prefix), an in-process NATS
// server with JetStream in a temporary directory, and polling helpers.
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// RedisAddr is the Redis tests use: $AUPD_TEST_REDIS_ADDR or the local one.
func RedisAddr() string {
	if a := os.Getenv("AUPD_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// Redis returns a client of the test Redis and a key prefix of this test's
// own. Every key under the prefix is deleted when the test ends. The test
// fails at once if Redis does not answer.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: RedisAddr()})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s: %v (start it, or set AUPD_TEST_REDIS_ADDR; scripts/test starts it)", RedisAddr(), err)
	}
	prefix := "aupt" + RandomHex(6)
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			rdb.Del(ctx, keys[:n]...)
			keys = keys[n:]
		}
		rdb.Close()
	})
	return rdb, prefix
}

// PrivateRedis starts a redis-server of this test's own (no persistence)
// and returns a client of it, for tests that read server-wide figures such
// as INFO commandstats.
func PrivateRedis(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: PrivateRedisServer(t)})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// PrivateRedisServer starts a redis-server of this test's own on a free
// loopback port, with extra arguments (for example "--maxmemory", "1mb"),
// and returns its address. It is killed when the test ends.
func PrivateRedisServer(t testing.TB, args ...string) string {
	t.Helper()
	return PrivateRedisServerOn(t, FreePort(t), args...)
}

// PrivateRedisServerOn is PrivateRedisServer on a given port.
func PrivateRedisServerOn(t testing.TB, port int, args ...string) string {
	t.Helper()
	addr, _ := PrivateRedisProcess(t, port, args...)
	return addr
}

// PrivateRedisProcess is PrivateRedisServerOn that also returns the
// redis-server process, for a test that signals it (SIGSTOP to make Redis
// hang without closing its connections, which the shared Redis must
// never be made to do).
func PrivateRedisProcess(t testing.TB, port int, args ...string) (string, *os.Process) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (scripts/test installs it): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no", "--dir", dir}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	Eventually(t, 10*time.Second, func() bool { return rdb.Ping(context.Background()).Err() == nil }, "private redis-server did not start")
	return addr, cmd.Process
}

// RedisPair starts a private master and a replica of it, and returns
// clients of both once the replica is in sync. The replica accepts DEBUG,
// so that a test can stall it (DEBUG SLEEP) while it stays connected.
func RedisPair(t testing.TB) (master, replica *redis.Client) {
	t.Helper()
	maddr := PrivateRedisServer(t, "--repl-diskless-sync-delay", "0")
	host, port, _ := net.SplitHostPort(maddr)
	raddr := PrivateRedisServer(t, "--replicaof", host, port, "--enable-debug-command", "yes")
	master = redis.NewClient(&redis.Options{Addr: maddr, Protocol: 2})
	replica = redis.NewClient(&redis.Options{Addr: raddr, Protocol: 2})
	t.Cleanup(func() { master.Close(); replica.Close() })
	Eventually(t, 10*time.Second, func() bool {
		info, err := replica.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, "replica did not sync")
	return master, replica
}

// Freeze stops a private Redis server's process (SIGSTOP) and returns
// what resumes it. Unlike a DEBUG SLEEP sent beside the test's own
// commands, nothing races: once Freeze returns, the server answers
// nothing and applies nothing it is sent until resumed. It is resumed
// when the test ends if the test did not.
func Freeze(t testing.TB, c *redis.Client) (resume func()) {
	t.Helper()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(infoField(info, "process_id")))
	if err != nil {
		t.Fatalf("redis process_id: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return v
		}
	}
	return ""
}

// DebianNATS starts the machine's nats-server binary (Debian's 2.9.10,
// which aupd must keep working with) with JetStream on a free loopback
// port and returns its URL. It is stopped when the test ends.
func DebianNATS(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Fatalf("nats-server not found (scripts/test installs Debian's): %v", err)
	}
	port := FreePort(t)
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	Eventually(t, 10*time.Second, func() bool {
		nc, err := nats.Connect(url)
		if err != nil {
			return false
		}
		defer nc.Close()
		_, err = nc.JetStream()
		return err == nil
	}, "nats-server did not start")
	return url
}

// BothNATS runs fn as two subtests: against an in-process server of the
// current release, and against the machine's Debian nats-server 2.9.10,
// the oldest release aupd supports.
func BothNATS(t *testing.T, fn func(t *testing.T, url string)) {
	t.Helper()
	t.Run("nats-in-process", func(t *testing.T) { fn(t, NATSServer(t, "").ClientURL()) })
	t.Run("nats-debian", func(t *testing.T) { fn(t, DebianNATS(t)) })
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// RandomHex returns 2n random hex digits.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NATSServer starts an in-process NATS server with JetStream on a random
// loopback port, storing in dir (a new temporary directory when empty).
// It is shut down when the test ends.
func NATSServer(t testing.TB, dir string) *server.Server {
	t.Helper()
	return NATSServerOn(t, -1, dir)
}

// NATSServerOn is NATSServer on a given port (-1: a random one).
func NATSServerOn(t testing.TB, port int, dir string) *server.Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	log := &serverLog{t: t}
	ns.SetLogger(log, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		log.close()
	})
	return ns
}

// serverLog passes an in-process server's warnings and errors to the test's
// log, so that a failed request shows the server's own reason (the API
// answers "error creating store for stream" and logs the cause). Notices,
// debug and trace lines are dropped. Nothing is logged once the server has
// shut down, since the test may have ended by then.
type serverLog struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (l *serverLog) logf(level, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Logf("nats-server %s: %s", level, fmt.Sprintf(format, v...))
	}
}

func (l *serverLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

func (l *serverLog) Noticef(string, ...any)         {}
func (l *serverLog) Debugf(string, ...any)          {}
func (l *serverLog) Tracef(string, ...any)          {}
func (l *serverLog) Warnf(format string, v ...any)  { l.logf("warning", format, v...) }
func (l *serverLog) Errorf(format string, v ...any) { l.logf("error", format, v...) }
func (l *serverLog) Fatalf(format string, v ...any) { l.logf("fatal", format, v...) }

// NATS connects to ns and closes the connection when the test ends.
func NATS(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream connects to the server at url, as NATS does, and returns its
// JetStream context.
func JetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(NATS(t, url))
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// Eventually polls cond until it is true or timeout passes, then fails
// with msg. It is for waiting on another process or goroutine; it never
// asserts a duration.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: "+msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
