package buildinfo

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestBuildInfoMetric(t *testing.T) {
	in := Read()
	if in.GoVersion == "" || in.Version == "" {
		t.Fatalf("empty build info: %+v", in)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector(in))
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gather: %v %v", mfs, err)
	}
	m := mfs[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if mfs[0].GetName() != "aupd_build_info" || m.GetGauge().GetValue() != 1 ||
		labels["version"] != in.Version || labels["revision"] != in.Revision || labels["goversion"] != in.GoVersion {
		t.Errorf("aupd_build_info = %v", m)
	}
	s := Info{Version: "v1.2.3", Revision: "abc", Modified: true, GoVersion: "go1.26"}.String()
	if s != "version v1.2.3, revision abc+modified, go1.26" {
		t.Errorf("String() = %q", s)
	}
}
