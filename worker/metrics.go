package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/rules"
)

type metrics struct {
	events       *prometheus.CounterVec
	crossings    *prometheus.CounterVec
	batchSize    prometheus.Histogram
	batchSeconds prometheus.Histogram
	redisErrors  prometheus.Counter
	published    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_events_total",
			Help: "Verdict events applied, by direction, verdict and outcome (counted, stats, duplicate, late, capped, external).",
		}, []string{"direction", "verdict", "outcome"}),
		crossings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_suspensions_total",
			Help: "Crossings of the AUP threshold, by action: suspend, or report (shadow mode, allowlist).",
		}, []string{"action"}),
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
			Help: "Batches or accounts whose Redis work failed and will be redelivered.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_account_events_published_total",
			Help: "Account events published from the outbox.",
		}),
	}
	for _, c := range []prometheus.Collector{m.events, m.crossings, m.batchSize, m.batchSeconds, m.redisErrors, m.published} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) event(d rules.Direction, v rules.Verdict, outcome string) {
	m.events.WithLabelValues(string(d), string(v), outcome).Inc()
}
