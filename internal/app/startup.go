package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Start-up waits for Redis and NATS rather than exiting: the HTTP listener
// is up first, answering /healthz (alive) and /readyz (503, saying what it
// waits for), and aupd starts the rest when they come.

// Backoff of the start-up retries.
const (
	startupBackoffFirst = 250 * time.Millisecond
	startupBackoffLast  = 10 * time.Second
)

// waitFor calls fn until it succeeds or ctx ends, with a backoff from
// startupBackoffFirst doubling to startupBackoffLast. It logs the first failure
// and then at most one line per 30 s, and tells the start-up handler what
// it waits for.
func (a *App) waitFor(ctx context.Context, what string, fn func(context.Context) error) error {
	d := startupBackoffFirst
	var lastLog time.Time
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				a.log.Info("ready after waiting", "for", what, "attempts", attempt)
			}
			return nil
		}
		a.waiting.Store(what + ": " + err.Error())
		if time.Since(lastLog) >= 30*time.Second {
			a.log.Warn("waiting at start-up", "for", what, "err", err, "retry_in", d)
			lastLog = time.Now()
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("start-up stopped while waiting for %s: %w", what, err)
		case <-t.C:
		}
		d = min(2*d, startupBackoffLast)
	}
}

// pingRedis succeeds when Redis answers and has loaded its data (a Redis
// still loading its AOF answers PING but refuses commands with LOADING).
func pingRedis(ctx context.Context, rdb redis.UniversalClient) error {
	if err := rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	return ignoreNil(rdb.Get(ctx, "aupd:startup:probe").Err()) // LOADING shows here
}

// probeStore is the verdict consumer's probe after a batch with transient
// failures: whether the store is down, so that fetching pauses. A Redis
// Cluster is down only when no master answers with its cluster ok: one
// shard down (cluster-require-full-coverage no) fails its own accounts,
// whose events are redelivered, and must not pause the other shards'
// counting. With full coverage required every node reports the cluster
// failed, and fetching pauses until it is whole.
func probeStore(ctx context.Context, rdb redis.UniversalClient) error {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return pingRedis(ctx, rdb)
	}
	var (
		mu    sync.Mutex
		alive bool
	)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		if err := m.Ping(ctx).Err(); err != nil { // LOADING shows here
			return err
		}
		info, err := m.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("redis %s: cluster state not ok", m.Options().Addr)
		}
		mu.Lock()
		alive = true
		mu.Unlock()
		return nil
	})
	switch {
	case alive:
		return nil
	case err == nil:
		return errors.New("redis: no master")
	}
	return err
}

// ignoreNil treats redis.Nil as success.
func ignoreNil(err error) error {
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

// checkDurability warns when Redis is set up in a way that can lose
// counted events, suspensions or notices: exact counting is as durable as
// Redis. It checks every master of a Cluster. It needs CONFIG GET; a
// managed Redis that refuses it is told so once.
func checkDurability(ctx context.Context, rdb redis.UniversalClient, waitReplicas int, log *slog.Logger) []string {
	var (
		mu              sync.Mutex
		warnings, notes []string
	)
	check := func(ctx context.Context, c *redis.Client) error {
		w, n, err := durabilityOf(ctx, c, waitReplicas)
		mu.Lock()
		warnings, notes = append(warnings, w...), append(notes, n...)
		mu.Unlock()
		return err
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, check)
	case *redis.Client:
		err = check(ctx, c)
	}
	if err != nil {
		log.Info("cannot check Redis persistence (CONFIG GET or INFO refused); exact counting needs AOF and maxmemory-policy noeviction", "err", err)
		return nil
	}
	slices.Sort(notes)
	for _, n := range slices.Compact(notes) {
		log.Info(n)
	}
	slices.Sort(warnings)
	warnings = slices.Compact(warnings)
	for _, w := range warnings {
		log.Warn("Redis is not durable enough for exact counting: "+w, "see", "docs/redis.md")
	}
	return warnings
}

// durabilityOf checks one master.
func durabilityOf(ctx context.Context, c *redis.Client, waitReplicas int) (warnings, notes []string, err error) {
	conf, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		return nil, nil, err
	}
	if aof := conf["appendonly"]; aof != "yes" {
		warnings = append(warnings, "appendonly is "+aof+": a Redis restart loses every window, suspension and notice state (set appendonly yes)")
	} else if fsync := conf["appendfsync"]; fsync != "always" && waitReplicas == 0 {
		notes = append(notes, "Redis appendfsync is "+fsync+": a crash of the Redis host can lose the last second of writes; "+
			"events counted then are counted again and a suspension can repeat (appendfsync always, or replicas and redis.wait_replicas, close it)")
	}
	if policy := conf["maxmemory-policy"]; policy != "noeviction" {
		warnings = append(warnings, "maxmemory-policy is "+policy+": Redis may evict windows and account state (set noeviction)")
	}
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return warnings, notes, err
	}
	replicas, _ := strconv.Atoi(infoValue(info, "connected_slaves"))
	switch {
	case waitReplicas == 0 && replicas > 0:
		warnings = append(warnings, fmt.Sprintf("a master has %d replicas but redis.wait_replicas is 0: a failover can lose writes aupd has acknowledged (set redis.wait_replicas: 1)", replicas))
	case waitReplicas > replicas:
		warnings = append(warnings, fmt.Sprintf("redis.wait_replicas is %d but master %s has %d connected replicas: its accounts are held, or acknowledged without replicas after redis.replica_loss_after under redis.replica_loss: accept, until enough replicas are back", waitReplicas, c.Options().Addr, replicas))
	}
	return warnings, notes, nil
}

// infoValue reads one field of an INFO reply.
func infoValue(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// startupHandler serves the HTTP listener until everything runs, then
// hands over to the full routes.
type startupHandler struct {
	mu   sync.RWMutex
	full http.Handler
	app  *App
}

func (h *startupHandler) set(full http.Handler) {
	h.mu.Lock()
	h.full = full
	h.mu.Unlock()
}

func (h *startupHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.RLock()
	full := h.full
	h.mu.RUnlock()
	if full != nil {
		full.ServeHTTP(w, r)
		return
	}
	switch {
	case r.URL.Path == "/healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "starting"})
	case r.URL.Path == "/readyz":
		what, _ := h.app.waiting.Load().(string)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "aupd": "starting", "waiting_for": what})
	case r.URL.Path == "/metrics":
		h.app.metricsHandler().ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, "/"):
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]string{"code": "starting", "message": "aupd is starting"}})
	}
}
