package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

type metrics struct {
	events *prometheus.CounterVec
	// byKind holds the pre-resolved children of events: [kind][outcome].
	byKind       [16][outcomes]prometheus.Counter
	crossings    *prometheus.CounterVec
	batchSize    prometheus.Histogram
	batchSeconds prometheus.Histogram
	redisErrors  prometheus.Counter
	published    prometheus.Counter
	statsDropped prometheus.Counter
	// senders of counted messages not tallied
	sendersDropped prometheus.Counter
	// whether outbound ham arrived within hamSilence, for the spam-rate
	// rule
	hamFeed prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_events_total",
			Help: "Verdict events applied, by direction, verdict and outcome (counted, stats, duplicate, late, capped, external).",
		}, []string{"direction", "verdict", "outcome"}),
		crossings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_suspensions_total",
			Help: "Crossings of an AUP rule found in the verdicts, by action (suspend, or report: shadow mode, allowlist) and rule (spam_count, spam_rate).",
		}, []string{"action", "rule"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "aupd_batch_size",
			Help:    "Valid events per applied batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "aupd_batch_seconds",
			Help:    "Time to apply one batch: the Redis round trip and any account events.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_redis_errors_total",
			Help: "Batches or accounts whose Redis work failed (redelivered when transient, dead-lettered when permanent).",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_account_events_published_total",
			Help: "Account events published from the outbox.",
		}),
		statsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_stats_dropped_total",
			Help: "Statistics-only events left out of the per-account hourly statistics because too many waited while Redis did not take them.",
		}),
		sendersDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_sender_tally_dropped_total",
			Help: "Counted events whose sender was left out of the account's sender tally: too many waited between flushes, more than the tally keeps arrived at once, or Redis did not take a flush (never retried).",
		}),
		hamFeed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "aupd_spam_rate_ham_feed",
			Help: "1 while outbound ham verdicts arrive (one within the last hour), 0 when none has: the spam-rate rule then stands aside and the spam count alone decides. Set only while a spam-rate rule is configured.",
		}),
	}
	for _, c := range []prometheus.Collector{m.events, m.crossings, m.batchSize, m.batchSeconds, m.redisErrors, m.published, m.statsDropped, m.sendersDropped, m.hamFeed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.resolve()
	return m, nil
}

// The outcome labels of aupd_events_total, by index.
const (
	outCounted = iota
	outStats
	outDuplicate
	outLate
	outCapped
	outExternal
	outcomes
)

var outcomeNames = [outcomes]string{"counted", "stats", "duplicate", "late", "capped", "external"}

func outcomeIndex(o store.Outcome) int {
	switch o {
	case store.Counted:
		return outCounted
	case store.StatsOnly:
		return outStats
	case store.Duplicate:
		return outDuplicate
	case store.Late:
		return outLate
	}
	return outCapped
}

// resolve creates every child of events once, so that the hot path only
// adds to counters.
func (m *metrics) resolve() {
	for _, d := range rules.Directions {
		for _, v := range rules.Verdicts {
			k := rules.KindOf(d, v)
			for o, name := range outcomeNames {
				m.byKind[k][o] = m.events.WithLabelValues(string(d), string(v), name)
			}
		}
	}
}

// tally adds up a batch's outcomes before touching the counters.
type tally [16][outcomes]int

func (t *tally) add(k rules.Kind, o int) { t[k&15][o]++ }

func (m *metrics) flush(t *tally) {
	for k := range t {
		for o, n := range t[k] {
			if n > 0 && m.byKind[k][o] != nil {
				m.byKind[k][o].Add(float64(n))
			}
		}
	}
}
