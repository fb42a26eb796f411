package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/config"
)

// newRedis returns one client for a standalone server (one address),
// Sentinel (master_name set) or a Cluster (several addresses).
func newRedis(c config.Redis) (redis.UniversalClient, error) {
	opts := &redis.UniversalOptions{
		Addrs:      c.Addrs,
		MasterName: c.MasterName,
		Username:   c.Username,
		Password:   string(c.Password),
		DB:         c.DB,
		// Redis 7.0 and later; RESP2 keeps script replies simple.
		Protocol: 2,
		// A caller's deadline bounds its command: each socket read and
		// write gets the earlier of it and the read/write timeout (5 s);
		// the wait for a pool connection (up to 6 s) and the backoff
		// between retries end with it too, and a command whose deadline
		// passed is not retried. Without this go-redis gave the socket
		// only the 5 s timeout, so a Redis that stopped answering held a
		// policy lookup for 5 s whatever its lookup_timeout. A context
		// without a deadline is bounded by the 5 s timeout, as before.
		ContextTimeoutEnabled: true,
	}
	if c.TLS.Enabled() {
		tc, err := tlsConfig(c.TLS)
		if err != nil {
			return nil, fmt.Errorf("redis tls: %w", err)
		}
		opts.TLSConfig = tc
	}
	if len(c.Addrs) > 1 && c.MasterName == "" {
		// A Cluster. go-redis reloads its slot map on a MOVED reply, and
		// otherwise once a minute: a master that died answers nothing, so
		// every command for its slots would go on dialling the dead
		// address for up to a minute after its replica took over (the
		// fault campaign showed counting of the shard stalled until the
		// old master came back). Reload the map every second instead.
		co := opts.Cluster()
		co.ClusterStateReloadInterval = clusterReloadInterval
		return redis.NewClusterClient(co), nil
	}
	return redis.NewUniversalClient(opts), nil
}

// clusterReloadInterval is how stale a Redis Cluster client's slot map
// may grow (one CLUSTER SLOTS per interval while commands flow).
const clusterReloadInterval = time.Second

// localRedis is a redis-server that aupd started itself.
type localRedis struct{ cmd *exec.Cmd }

// ensureRedis pings Redis and, when nothing answers on a loopback address
// and autostart is on, starts a local redis-server under the data
// directory. When that is impossible it says exactly what is missing.
// Otherwise start-up waits for Redis to come.
func ensureRedis(ctx context.Context, cfg *config.Config, rdb redis.UniversalClient, log *slog.Logger) (*localRedis, error) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := rdb.Ping(pctx).Err()
	cancel()
	if err == nil {
		return nil, nil
	}
	addr := cfg.Redis.Addrs[0]
	host, port, splitErr := net.SplitHostPort(addr)
	loopback := splitErr == nil && (host == "localhost" || net.ParseIP(host).IsLoopback())
	if !cfg.Redis.Autostart || len(cfg.Redis.Addrs) != 1 || cfg.Redis.MasterName != "" || !loopback {
		return nil, nil // start-up waits for it
	}
	bin, lookErr := exec.LookPath("redis-server")
	if lookErr != nil {
		return nil, fmt.Errorf("redis at %s does not answer (%w) and redis-server is not installed: install it (apt-get install redis-server) or set redis.addrs / %s to a running Redis", addr, err, config.EnvRedisAddrs)
	}
	dir, absErr := filepath.Abs(filepath.Join(cfg.DataDir, "redis"))
	if absErr != nil {
		return nil, absErr
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("redis data dir: %w", err)
	}
	log.Info("starting a local redis-server", "addr", addr, "dir", dir)
	cmd := exec.Command(bin, "--bind", host, "--port", port, "--dir", dir,
		"--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	lr := &localRedis{cmd: cmd}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err = rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return lr, nil
		}
		if time.Now().After(deadline) {
			lr.stop()
			return nil, fmt.Errorf("started redis-server on %s but it does not answer: %w (see %s/redis.log)", addr, err, dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *localRedis) stop() {
	if l == nil || l.cmd.Process == nil {
		return
	}
	_ = l.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = l.cmd.Wait(); close(done) }() // how it exits does not matter
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = l.cmd.Process.Kill()
		<-done
	}
}
