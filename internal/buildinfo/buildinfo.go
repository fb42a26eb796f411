// Package buildinfo tells which aupd this is: the module version and the
// VCS revision that the Go toolchain records in every binary, for
// `aupd version`, `aupctl version` and the aupd_build_info metric.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Info is what the build recorded.
type Info struct {
	Version   string // module version, "(devel)" for a build from a work tree
	Revision  string // VCS revision, "unknown" when not recorded
	Time      string // commit time (RFC 3339), "" when not recorded
	Modified  bool   // the work tree had uncommitted changes
	GoVersion string
}

// Read returns the build information of the running binary.
func Read() Info {
	in := Info{Version: "unknown", Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in
	}
	if bi.Main.Version != "" {
		in.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one-line form printed by the version commands.
func (in Info) String() string {
	rev := in.Revision
	if in.Modified {
		rev += "+modified"
	}
	s := fmt.Sprintf("version %s, revision %s", in.Version, rev)
	if in.Time != "" {
		s += ", committed " + in.Time
	}
	return s + ", " + in.GoVersion
}

// Collector returns the aupd_build_info gauge: always 1, with the
// version, revision and Go version as labels.
func Collector(in Info) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "aupd_build_info",
		Help: "Always 1; the labels say which build of aupd runs (module version, VCS revision, Go version).",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(in.Version, in.Revision, in.GoVersion).Set(1)
	return g
}
