package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Readiness is probed in the background, not per request: a probe of a
// hung Redis or of a JetStream without quorum waits out its timeout, and
// /readyz, aupd_ready and the scrape must answer at once whatever the
// probes find. The checker probes every readyInterval, each probe bounded
// by readyTimeout, and /readyz answers from the last round.
const (
	readyInterval = 2 * time.Second
	readyTimeout  = time.Second
	// readyStale is how old the last round may be before /readyz says the
	// checks themselves are stuck.
	readyStale = 3*readyInterval + readyTimeout
	// readyProbeTTL is how long a write probe's key lives.
	readyProbeTTL = 30 * time.Second
)

// Readiness check names: the keys of /readyz's answer and the values of
// aupd_component_up's component label. A Redis Cluster adds one key per
// master, shardCheck + its address.
const (
	checkNATS         = "nats"
	checkJetStream    = "jetstream"
	checkRedis        = "redis"
	checkRedisCluster = "redis_cluster"
	shardCheck        = "redis_shard "
	// checkRounds is there only when the last round is older than
	// readyStale.
	checkRounds = "readiness"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// consumerLag is the verdict consumer's lag as JetStream last told it.
type consumerLag struct{ pending, ackPending uint64 }

// readiness is one round of checks.
type readiness struct {
	at     time.Time
	checks map[string]string // check -> "ok" or what failed
	// cluster: Redis is a Cluster, and shards and unserved are set.
	cluster  bool
	shards   map[string]bool // master address -> took the write probe
	unserved int             // slots not served, as the cluster says
	// lag is the last lag read (nil: never read); it is kept while the
	// consumer cannot be read, so that its series does not vanish.
	lag *consumerLag
}

// ok reports whether a check passed.
func (r *readiness) ok(check string) bool { return r.checks[check] == "ok" }

// status is what /readyz answers: "ok", "degraded" (a Redis Cluster
// where some masters take writes and some do not, or slots are not
// served: ready, since every aupd shares that Redis and taking them all
// out of service would stop enforcement for every shard) or "not_ready"
// (NATS or JetStream unusable, or no Redis master takes writes).
func (r *readiness) status() string {
	for _, c := range []string{checkNATS, checkJetStream, checkRedis} {
		if !r.ok(c) {
			return "not_ready"
		}
	}
	if _, stuck := r.checks[checkRounds]; stuck {
		return "not_ready"
	}
	for c, v := range r.checks {
		if v != "ok" && (c == checkRedisCluster || strings.HasPrefix(c, shardCheck)) {
			return "degraded"
		}
	}
	return "ok"
}

// readinessChecker is the actor that probes NATS, JetStream and Redis and
// keeps the last round for /readyz and the metrics. It logs each loss
// once when it starts and once when it ends.
type readinessChecker struct {
	nc       *nats.Conn
	verdicts jetstream.Consumer
	rdb      redis.UniversalClient
	prefix   string
	log      *slog.Logger
	// running reports whether aupd has started and is not stopping.
	running func() bool

	last atomic.Pointer[readiness]
	// failing is when each failing check started failing; run's alone.
	failing map[string]time.Time

	keysMu sync.Mutex
	keys   map[string]string // Cluster master address -> a key of its slots

	ready, up, shardUp, unserved *prometheus.Desc
}

func newReadinessChecker(c *readinessChecker) *readinessChecker {
	c.failing, c.keys = map[string]time.Time{}, map[string]string{}
	c.ready = prometheus.NewDesc("aupd_ready",
		"1 when GET /readyz answers 200 (ready or degraded), 0 otherwise.", nil, nil)
	c.up = prometheus.NewDesc("aupd_component_up",
		"1 when a readiness check passes, 0 when it fails, as of the last round (every 2 s). component: nats, jetstream, redis, redis_cluster (a Redis Cluster only).",
		[]string{"component"}, nil)
	c.shardUp = prometheus.NewDesc("aupd_redis_shard_up",
		"1 when a Redis Cluster master (one per shard) took the last write probe, 0 when it did not.",
		[]string{"master"}, nil)
	c.unserved = prometheus.NewDesc("aupd_redis_slots_unserved",
		"Hash slots of the Redis Cluster that no master serves now, as CLUSTER INFO says (cluster_slots_ok short of 16384).",
		nil, nil)
	return c
}

// Run probes every interval until ctx ends.
func (c *readinessChecker) Run(ctx context.Context) error {
	t := time.NewTicker(readyInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.round(ctx)
		}
	}
}

// round runs every probe at once, each bounded by the timeout, and keeps
// the result.
func (c *readinessChecker) round(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, readyTimeout)
	defer cancel()
	r := &readiness{checks: map[string]string{}}
	if prev := c.last.Load(); prev != nil {
		r.lag = prev.lag
	}
	var wg sync.WaitGroup
	wg.Go(func() { c.probeNATS(ctx, r) })
	var redisChecks map[string]string
	wg.Go(func() { redisChecks = c.probeRedis(ctx, r) })
	wg.Wait()
	if parent.Err() != nil {
		return // aupd stops: the probes were cut short, not failing
	}
	maps.Copy(r.checks, redisChecks)
	r.at = time.Now()
	c.logChanges(r)
	c.last.Store(r)
}

// probeNATS checks the connection and then reads the verdict consumer's
// info: without a JetStream quorum (or a consumer leader) that request
// fails or times out, and aupd can neither fetch nor ack.
func (c *readinessChecker) probeNATS(ctx context.Context, r *readiness) {
	if s := c.nc.Status(); s != nats.CONNECTED {
		r.checks[checkNATS] = s.String()
		r.checks[checkJetStream] = "not checked: nats " + s.String()
		return
	}
	r.checks[checkNATS] = "ok"
	info, err := c.verdicts.Info(ctx)
	if err != nil {
		r.checks[checkJetStream] = "verdict consumer info: " + err.Error()
		return
	}
	r.lag = &consumerLag{pending: info.NumPending, ackPending: uint64(info.NumAckPending)}
	r.checks[checkJetStream] = quorum(info.Cluster)
}

// quorumSilence is how long a consumer's leader may not have heard from
// a peer before the peer no longer counts towards its quorum: peers
// answer the leader's heartbeat every second.
const quorumSilence = 4 * time.Second

// quorum says "ok" when the verdict consumer's leader has heard lately
// from enough of its peers to commit what aupd acks. A leader that lost
// its quorum still answers the consumer's info until raft's lost-quorum
// check steps it down, 10 to 20 s later, and acks nothing meanwhile. A
// consumer of one replica has no peers.
func quorum(ci *jetstream.ClusterInfo) string {
	if ci == nil || len(ci.Replicas) == 0 {
		return "ok"
	}
	heard := 1 // the leader
	var silent []string
	for _, p := range ci.Replicas {
		if !p.Offline && p.Active < quorumSilence && (p.Active > 0 || p.Current) {
			heard++
		} else {
			silent = append(silent, fmt.Sprintf("%s (last heard %s ago)", p.Name, p.Active.Round(time.Millisecond)))
		}
	}
	if size := len(ci.Replicas) + 1; heard <= size/2 {
		return fmt.Sprintf("no quorum: the verdict consumer's leader %s has heard from %d of its %d peers within %s: %s",
			ci.Leader, heard-1, size-1, quorumSilence, strings.Join(silent, ", "))
	}
	return "ok"
}

// probeRedis writes a short-lived key: a Redis that answers PING may
// still refuse writes (loading, read-only, out of memory, CLUSTERDOWN).
// On a Cluster it writes on every master and reads CLUSTER INFO.
func (c *readinessChecker) probeRedis(ctx context.Context, r *readiness) map[string]string {
	checks := map[string]string{}
	cc, ok := c.rdb.(*redis.ClusterClient)
	if !ok {
		checks[checkRedis] = probeText(c.rdb.Set(ctx, c.prefix+":ready", "1", readyProbeTTL).Err())
		return checks
	}
	r.cluster = true
	r.shards = map[string]bool{}
	var (
		mu     sync.Mutex
		states []string
		okMin  = clusterSlots
		seen   bool
	)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		addr := m.Options().Addr
		state, slotsOK, infoErr := clusterInfo(ctx, m)
		werr := c.writeProbe(ctx, cc, m)
		mu.Lock()
		defer mu.Unlock()
		if infoErr == nil {
			seen = true
			states = append(states, state)
			okMin = min(okMin, slotsOK)
		}
		checks[shardCheck+addr] = probeText(werr)
		r.shards[addr] = werr == nil
		return nil
	})
	if err != nil { // no slot map: no master known
		checks[checkRedis] = err.Error()
		checks[checkRedisCluster] = "no slot map: " + err.Error()
		return checks
	}
	if !seen {
		okMin = 0 // no master answered CLUSTER INFO: none serves its slots
	}
	r.unserved = clusterSlots - okMin
	checks[checkRedis], checks[checkRedisCluster] = clusterVerdict(checks, states, r.unserved)
	return checks
}

// clusterVerdict sums up a Cluster's probes: redis is ok when some master
// took the write (aupd can count for its accounts); redis_cluster when
// every master did, every node says cluster_state ok, and every slot is
// served.
func clusterVerdict(checks map[string]string, states []string, unserved int) (redisCheck, clusterCheck string) {
	var failed []string
	took := 0
	for k, v := range checks {
		if addr, ok := strings.CutPrefix(k, shardCheck); ok {
			if v == "ok" {
				took++
			} else {
				failed = append(failed, addr)
			}
		}
	}
	slices.Sort(failed)
	redisCheck = "ok"
	if took == 0 {
		redisCheck = "no master takes writes"
		if len(failed) > 0 {
			redisCheck += ": " + checks[shardCheck+failed[0]]
		}
	}
	var parts []string
	if i := slices.IndexFunc(states, func(s string) bool { return s != "ok" }); i >= 0 {
		parts = append(parts, "cluster_state "+states[i])
	}
	if unserved > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d slots not served", unserved, clusterSlots))
	}
	if len(failed) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d masters fail the write probe (%s)", len(failed), len(failed)+took, strings.Join(failed, ", ")))
	}
	if len(parts) == 0 {
		return redisCheck, "ok"
	}
	return redisCheck, strings.Join(parts, "; ")
}

// clusterInfo reads a node's cluster_state and cluster_slots_ok.
func clusterInfo(ctx context.Context, m *redis.Client) (string, int, error) {
	info, err := m.ClusterInfo(ctx).Result()
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(infoValue(info, "cluster_slots_ok"))
	if err != nil {
		return "", 0, fmt.Errorf("cluster_slots_ok: %w", err)
	}
	return infoValue(info, "cluster_state"), n, nil
}

// writeProbe writes a key of one of the master's slots on the master
// itself.
func (c *readinessChecker) writeProbe(ctx context.Context, cc *redis.ClusterClient, m *redis.Client) error {
	addr := m.Options().Addr
	key, err := c.keyOn(ctx, cc, addr)
	if err != nil {
		return err
	}
	err = m.Set(ctx, key, "1", readyProbeTTL).Err()
	if redis.HasErrorPrefix(err, "MOVED") {
		// The slots moved (a resharding): find another key next round.
		c.keysMu.Lock()
		delete(c.keys, addr)
		c.keysMu.Unlock()
	}
	return err
}

// keyOn returns a probe key that hashes to a slot the master at addr
// serves, per the client's slot map: PREFIX:ready:{N} for the first N
// that does. One search finds a key for every master it passes.
func (c *readinessChecker) keyOn(ctx context.Context, cc *redis.ClusterClient, addr string) (string, error) {
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	if k, ok := c.keys[addr]; ok {
		return k, nil
	}
	for n := range 4 * clusterSlots {
		key := c.prefix + ":ready:{" + strconv.Itoa(n) + "}"
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return "", err
		}
		a := m.Options().Addr
		if _, ok := c.keys[a]; !ok {
			c.keys[a] = key
		}
		if a == addr {
			return key, nil
		}
	}
	return "", errors.New("no probe key hashes to this master's slots")
}

// probeText is what /readyz says of a write probe.
func probeText(err error) string {
	if err != nil {
		return "write probe: " + err.Error()
	}
	return "ok"
}

// logChanges logs a check that starts failing, and one that passes again
// (or is gone: a failed-over master) with how long it failed.
func (c *readinessChecker) logChanges(r *readiness) {
	for check, v := range r.checks {
		if v == "ok" {
			continue
		}
		if _, ok := c.failing[check]; !ok {
			c.failing[check] = r.at
			c.log.Warn("readiness check failing", "check", check, "err", v)
		}
	}
	for check, since := range c.failing {
		if v, ok := r.checks[check]; ok && v != "ok" {
			continue
		}
		delete(c.failing, check)
		c.log.Info("readiness check passes again", "check", check, "failed_for", r.at.Sub(since).Round(time.Millisecond))
	}
}

// answer is what GET /readyz answers: the last round's checks, aupd's
// own state and the status, 503 when not ready.
func (c *readinessChecker) answer() (int, map[string]string) {
	body := map[string]string{checkRounds: "no round of checks has ended yet"}
	if r := c.last.Load(); r != nil {
		body = maps.Clone(r.checks)
		if age := time.Since(r.at); age > readyStale {
			body[checkRounds] = fmt.Sprintf("no round of checks has ended for %s", age.Round(time.Second))
		}
	}
	status := (&readiness{checks: body}).status()
	if !c.running() {
		body["aupd"] = "starting or stopping"
		status = "not_ready"
	}
	body["status"] = status
	if status == "not_ready" {
		return http.StatusServiceUnavailable, body
	}
	return http.StatusOK, body
}

// lag is the verdict consumer's last lag read (nil: none yet), and why
// the last round could not read it.
func (c *readinessChecker) lag() (*consumerLag, error) {
	r := c.last.Load()
	if r == nil {
		return nil, errors.New("no round of checks yet")
	}
	if !r.ok(checkJetStream) {
		return r.lag, errors.New(r.checks[checkJetStream])
	}
	return r.lag, nil
}

// Describe implements prometheus.Collector.
func (c *readinessChecker) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ready
	ch <- c.up
	ch <- c.shardUp
	ch <- c.unserved
}

// Collect implements prometheus.Collector: the last round, read at once.
func (c *readinessChecker) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v bool, labels ...string) {
		f := 0.0
		if v {
			f = 1
		}
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, f, labels...)
	}
	code, _ := c.answer()
	gauge(c.ready, code == http.StatusOK)
	r := c.last.Load()
	if r == nil {
		return
	}
	components := []string{checkNATS, checkJetStream, checkRedis}
	if r.cluster {
		components = append(components, checkRedisCluster)
		for _, addr := range slices.Sorted(maps.Keys(r.shards)) {
			gauge(c.shardUp, r.shards[addr], addr)
		}
		ch <- prometheus.MustNewConstMetric(c.unserved, prometheus.GaugeValue, float64(r.unserved))
	}
	for _, comp := range components {
		gauge(c.up, r.ok(comp), comp)
	}
}
