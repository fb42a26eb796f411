package app

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// lagGauge reports the verdict consumer's lag, read from JetStream.
type lagGauge struct {
	cons    jetstream.Consumer
	pending *prometheus.GaugeVec
}

func newLagGauge(reg prometheus.Registerer, cons jetstream.Consumer) *lagGauge {
	g := &lagGauge{cons: cons, pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "aupd_consumer_lag",
		Help: "Verdict consumer lag from JetStream: pending (not yet delivered) and ack_pending (delivered, not yet acked).",
	}, []string{"kind"})}
	reg.MustRegister(g.pending)
	return g
}

func (g *lagGauge) update(ctx context.Context) error {
	info, err := g.cons.Info(ctx)
	if err != nil {
		return err
	}
	g.pending.WithLabelValues("pending").Set(float64(info.NumPending))
	g.pending.WithLabelValues("ack_pending").Set(float64(info.NumAckPending))
	return nil
}
