// Package buildinfo tells which aupd this is, for `aupd version`,
// `aupctl version` (and `--version`), `aupd-sessiond version` and the
// aupd_build_info metric.
//
// A release build stamps the version, the revision and the build date at
// link time (scripts/release, the Dockerfile):
//
//	go build -ldflags "-X github.com/aupd/aupd/internal/buildinfo.version=v0.3.0
//	  -X github.com/aupd/aupd/internal/buildinfo.revision=$(git rev-parse HEAD)
//	  -X github.com/aupd/aupd/internal/buildinfo.buildDate=2026-12-06T21:00:00Z"
//
// What is not stamped comes from what the Go toolchain records in every
// binary (debug.ReadBuildInfo): the module version (`go install ...@v0.3.0`
// records it; a build in a work tree says "(devel)") and the VCS settings
// (when built with -buildvcs and a .git directory).
//
// The package imports nothing outside the standard library, so that every
// binary may use it without linking a metrics or storage client.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the linker (-ldflags -X); empty in a plain `go build`. Package
// variables because -X sets nothing else (prometheus/common/version does
// the same); nothing assigns them at run time.
var (
	version   string
	revision  string
	buildDate string
)

// Info is what the build recorded.
type Info struct {
	Version   string // "v0.3.0"; the module version, "(devel)" for an unstamped build from a work tree
	Revision  string // VCS revision (commit hash), "unknown" when not recorded
	BuildDate string // when the release build ran (RFC 3339), "" when not stamped
	Time      string // commit time (RFC 3339) from the VCS settings, "" when not recorded
	Modified  bool   // the work tree had uncommitted changes (VCS settings only)
	GoVersion string
}

// Read returns the build information of the running binary.
func Read() Info {
	bi, _ := debug.ReadBuildInfo()
	return read(stamp{version: version, revision: revision, buildDate: buildDate}, bi)
}

// stamp is what -ldflags -X set.
type stamp struct{ version, revision, buildDate string }

// read merges the link-time stamp (first) with the toolchain's record
// (bi may be nil).
func read(s stamp, bi *debug.BuildInfo) Info {
	in := Info{Version: s.version, Revision: s.revision, BuildDate: s.buildDate, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if in.Version == "" {
			in.Version = bi.Main.Version
		}
		// The VCS settings describe the tree the binary was built from;
		// a stamped revision wins, and then the settings (of possibly
		// another tree, or none) are not mixed in.
		if in.Revision == "" {
			for _, kv := range bi.Settings {
				switch kv.Key {
				case "vcs.revision":
					in.Revision = kv.Value
				case "vcs.time":
					in.Time = kv.Value
				case "vcs.modified":
					in.Modified = kv.Value == "true"
				}
			}
		}
	}
	if in.Version == "" {
		in.Version = "unknown"
	}
	if in.Revision == "" {
		in.Revision = "unknown"
	}
	return in
}

// String is the one-line form printed by the version commands:
//
//	version v0.3.0, revision 6f9eef8..., built 2026-12-06T21:00:00Z, go1.26.8
func (in Info) String() string {
	rev := in.Revision
	if in.Modified {
		rev += "+modified"
	}
	s := fmt.Sprintf("version %s, revision %s", in.Version, rev)
	if in.BuildDate != "" {
		s += ", built " + in.BuildDate
	}
	if in.Time != "" {
		s += ", committed " + in.Time
	}
	return s + ", " + in.GoVersion
}
