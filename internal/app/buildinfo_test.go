package app

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aupd/aupd/internal/buildinfo"
)

func TestBuildInfoCollector(t *testing.T) {
	for _, in := range []buildinfo.Info{
		{Version: "v0.3.0", Revision: "6f9eef8", BuildDate: "2026-12-06T21:00:00Z", GoVersion: "go1.26.8"},
		{Version: "(devel)", Revision: "unknown", GoVersion: "go1.26.8"}, // not stamped: no build_date
	} {
		reg := prometheus.NewRegistry()
		reg.MustRegister(buildInfoCollector(in))
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
			t.Fatalf("gather: %v %v", mfs, err)
		}
		m := mfs[0].GetMetric()[0]
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		want := map[string]string{"version": in.Version, "revision": in.Revision, "build_date": in.BuildDate, "goversion": in.GoVersion}
		if mfs[0].GetName() != "aupd_build_info" || m.GetGauge().GetValue() != 1 || len(got) != len(want) {
			t.Errorf("aupd_build_info = %v", m)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("label %s = %q, want %q", k, got[k], v)
			}
		}
	}
}
