package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/buildinfo"
)

// buildInfoCollector is the aupd_build_info gauge: always 1, its labels
// say which build runs (what `aupd version` prints). build_date is empty
// for a build that was not stamped (Prometheus then drops the label).
func buildInfoCollector(in buildinfo.Info) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "aupd_build_info",
		Help: "Always 1; the labels say which build of aupd runs (version, VCS revision, build date, Go version).",
	}, []string{"version", "revision", "build_date", "goversion"})
	g.WithLabelValues(in.Version, in.Revision, in.BuildDate, in.GoVersion).Set(1)
	return g
}
