package replsync

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Loss is what aupd does with a master whose waits come back short: fewer
// replicas confirm its writes than it waits for, as when a replica was
// promoted and has no replica of its own until the old master returns.
type Loss string

const (
	// Hold keeps failing the master's waits: the events of its accounts
	// stay in JetStream and are redelivered until a replica holds their
	// writes. Nothing acknowledged can be lost; that shard's counting
	// waits for a replica.
	Hold Loss = "hold"
	// Accept holds the master's waits for a bound, then acknowledges its
	// writes without the replicas until one confirms again: that shard is
	// counted, and what it acknowledged meanwhile is lost if the master
	// fails before a replica holds it.
	Accept Loss = "accept"
)

// forgetAfter is how long a master whose waits came back short may go
// without a wait before it is forgotten: its slots moved to another
// master, or none of its accounts was written since.
const forgetAfter = 5 * time.Minute

// losses keeps the masters whose waits come back short, decides what a
// short wait returns (Loss), and logs and counts the runs of them.
type losses struct {
	loss     Loss
	after    time.Duration
	replicas int
	log      *slog.Logger
	m        *Metrics
	now      func() time.Time

	n    atomic.Int32 // len(runs): a healthy wait takes no lock
	mu   sync.Mutex
	runs map[string]*shortRun
}

// shortRun is one master's run of short waits, from the first until one
// is confirmed.
type shortRun struct {
	since, seen time.Time
	accepting   bool // Accept's bound passed: short waits count as confirmed
}

func newLosses(replicas int) *losses {
	return &losses{loss: Hold, replicas: replicas, log: slog.New(slog.DiscardHandler), now: time.Now,
		runs: map[string]*shortRun{}}
}

// short reports whether the master's waits come back short.
func (l *losses) short(master string) bool {
	if l.n.Load() == 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[master] != nil
}

// record notes how the master's wait ended and returns what the wait
// returns: err, or nil for a short wait the Loss accepts.
func (l *losses) record(master string, err error) error {
	var se *ShortError
	switch {
	case err == nil:
		if l.n.Load() > 0 {
			l.end(master, false)
		}
		return nil
	case errors.As(err, &se):
		return l.recordShort(master, se)
	default:
		// The master did not answer: no replica confirmed, but that
		// neither starts nor ends a run of short waits.
		l.m.failed(master)
		return err
	}
}

func (l *losses) recordShort(master string, se *ShortError) error {
	now := l.now()
	l.mu.Lock()
	r := l.runs[master]
	started := r == nil
	if started {
		r = &shortRun{since: now}
		l.runs[master] = r
		l.n.Add(1)
	}
	r.seen = now
	accepts := l.loss == Accept && now.Sub(r.since) >= l.after
	turned := accepts && !r.accepting
	r.accepting = r.accepting || accepts
	l.mu.Unlock()

	l.m.failed(master)
	if started {
		l.m.set(master, 1, -1)
		l.log.Warn("redis master's writes are not on enough replicas: its accounts are not acknowledged, their events wait for redelivery",
			"master", master, "replicas", se.Got, "wait_replicas", l.replicas,
			"replica_loss", string(l.loss), "replica_loss_after", l.after)
	}
	if turned {
		l.m.set(master, -1, 1)
		l.log.Warn("acknowledging a redis master's writes without replicas (redis.replica_loss: accept): a failover of it loses them",
			"master", master, "since", r.since)
	}
	if accepts {
		return nil
	}
	return se
}

// end ends the master's run of short waits, if it has one, and says so;
// forget drops the master's series too.
func (l *losses) end(master string, forget bool) {
	l.mu.Lock()
	r := l.runs[master]
	if r != nil {
		delete(l.runs, master)
		l.n.Add(-1)
	}
	l.mu.Unlock()
	if r == nil {
		return
	}
	msg := "redis master's writes are on enough replicas again"
	if forget {
		msg = "redis master not waited on for a while: forgotten"
		l.m.forget(master)
	} else {
		l.m.set(master, 0, 0)
	}
	l.log.Info(msg, "master", master, "after", l.now().Sub(r.since).Round(time.Millisecond),
		"acknowledged_without_replicas", r.accepting)
}

// forgetStale ends the runs of masters not waited on for forgetAfter.
func (l *losses) forgetStale() {
	if l.n.Load() == 0 {
		return
	}
	now := l.now()
	var stale []string
	l.mu.Lock()
	for m, r := range l.runs {
		if now.Sub(r.seen) >= forgetAfter {
			stale = append(stale, m)
		}
	}
	l.mu.Unlock()
	for _, m := range stale {
		l.end(m, true)
	}
}

// Metrics are the barrier's metrics, registered whether or not aupd
// waits for replicas, so that the series exist from the first scrape.
type Metrics struct {
	failures     *prometheus.CounterVec
	unreplicated *prometheus.GaugeVec
	accepted     *prometheus.GaugeVec
}

// NewMetrics registers the barrier's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_redis_wait_failures_total",
			Help: "Replication waits (redis.wait_replicas) that failed, by master: fewer replicas confirmed than asked, or the master did not answer. Accepted ones (redis.replica_loss: accept) count too.",
		}, []string{"master"}),
		unreplicated: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "aupd_redis_unreplicated",
			Help: "1 while a master's replication waits come back short (fewer replicas confirm its writes than redis.wait_replicas), from the first until one is confirmed.",
		}, []string{"master"}),
		accepted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "aupd_redis_unreplicated_accepted",
			Help: "1 while aupd acknowledges a master's writes without replicas (redis.replica_loss: accept, after redis.replica_loss_after).",
		}, []string{"master"}),
	}
	for _, c := range []prometheus.Collector{m.failures, m.unreplicated, m.accepted} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) failed(master string) {
	if m != nil {
		m.failures.WithLabelValues(master).Inc()
	}
}

// set sets the master's gauges; a negative value leaves one as it is.
func (m *Metrics) set(master string, unreplicated, accepted float64) {
	if m == nil {
		return
	}
	if unreplicated >= 0 {
		m.unreplicated.WithLabelValues(master).Set(unreplicated)
	}
	if accepted >= 0 {
		m.accepted.WithLabelValues(master).Set(accepted)
	}
}

func (m *Metrics) forget(master string) {
	if m != nil {
		m.unreplicated.DeleteLabelValues(master)
		m.accepted.DeleteLabelValues(master)
	}
}
