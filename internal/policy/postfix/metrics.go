package postfix

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// serverName is the "server" label of the shared policy metrics.
const serverName = "postfix"

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	conns    prometheus.Gauge
	refused  prometheus.Counter
}

// newMetrics registers the policy metrics on reg. The request counter and
// the latency histogram are shared with the Dovecot policy server (label
// "server"); whichever registers first wins and the other reuses it.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_policy_requests_total",
			Help: "Policy requests answered, by server and result.",
		}, []string{"server", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "aupd_policy_request_duration_seconds",
			Help:    "Time to answer one policy request, by server.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"server"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "aupd_policy_postfix_connections",
			Help: "Open Postfix policy connections.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aupd_policy_postfix_connections_refused_total",
			Help: "Postfix policy and transport map connections closed at once because max_connections were open.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.latency, err = register(reg, m.latency); err != nil {
		return nil, err
	}
	if m.conns, err = register(reg, m.conns); err != nil {
		return nil, err
	}
	if m.refused, err = register(reg, m.refused); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the identical collector already there.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
