package dovecot

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// serverName is the "server" label of the shared policy metrics.
const serverName = "dovecot"

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	logins   *prometheus.CounterVec
	// previousKey counts requests that sent the previous API key.
	previousKey *prometheus.CounterVec
}

// The result label values of aupd_dovecot_logins_recorded_total.
const (
	loginRecorded    = "recorded"
	loginNotGoverned = "not_recorded" // no record to add a failed login to, or not governed
	loginError       = "error"
)

// newMetrics registers the policy metrics on reg. The request counter and
// the latency histogram are shared with the Postfix policy server (label
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
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_dovecot_logins_recorded_total",
			Help: "Logins from Dovecot's reports offered to the accounts' recent logins, by result: recorded, not_recorded (no record to add to), error (Redis; the answer is unchanged).",
		}, []string{"result"}),
		previousKey: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_policy_previous_key_total",
			Help: "Policy requests that sent the previous API key (policy.dovecot.previous_api_key), by server: while it grows, a server still has the old key.",
		}, []string{"server"}),
	}
	m.previousKey.WithLabelValues(serverName)
	for _, r := range []string{loginRecorded, loginNotGoverned, loginError} {
		m.logins.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.logins, err = register(reg, m.logins); err != nil {
		return nil, err
	}
	if m.previousKey, err = register(reg, m.previousKey); err != nil {
		return nil, err
	}
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.latency, err = register(reg, m.latency); err != nil {
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
