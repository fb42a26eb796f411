package volume

import "github.com/prometheus/client_golang/prometheus"

// The outcome label values of aupd_volume_messages_total.
const (
	outcomeCounted   = "counted"
	outcomeDuplicate = "duplicate"
	outcomeThrottled = "throttled"
)

type metrics struct {
	messages  *prometheus.CounterVec
	throttled *prometheus.CounterVec
	suspended *prometheus.CounterVec
	reported  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_volume_messages_total",
			Help: "Messages of senders with volume limits at Postfix's END-OF-MESSAGE, by outcome: counted, duplicate (Postfix asked again; counted once), throttled (held back, not counted).",
		}, []string{"outcome"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_volume_throttled_total",
			Help: "Throttles a volume limit started, by rule.",
		}, []string{"rule"}),
		suspended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_volume_suspensions_total",
			Help: "AUP suspensions a volume limit made, by rule.",
		}, []string{"rule"}),
		reported: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aupd_volume_reported_total",
			Help: "Volume limit crossings reported instead of enforced (shadow mode or the volume allowlist), by rule and the action the limit would have taken.",
		}, []string{"rule", "action"}),
	}
	for _, o := range []string{outcomeCounted, outcomeDuplicate, outcomeThrottled} {
		m.messages.WithLabelValues(o)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.messages, m.throttled, m.suspended, m.reported} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
