package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestRead(t *testing.T) {
	vcs := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/aupd/aupd", Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "6f9eef8aaaa"},
			{Key: "vcs.time", Value: "2026-12-06T20:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	installed := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/aupd/aupd", Version: "v0.3.0"}}
	for _, tc := range []struct {
		name string
		s    stamp
		bi   *debug.BuildInfo
		want Info
	}{
		{"stamped release build", stamp{"v0.3.0", "6f9eef8bbbb", "2026-12-06T21:00:00Z"}, vcs,
			Info{Version: "v0.3.0", Revision: "6f9eef8bbbb", BuildDate: "2026-12-06T21:00:00Z", GoVersion: "go1.26.8"}},
		{"go build in a work tree", stamp{}, vcs,
			Info{Version: "(devel)", Revision: "6f9eef8aaaa", Time: "2026-12-06T20:00:00Z", Modified: true, GoVersion: "go1.26.8"}},
		{"go install module@version", stamp{}, installed,
			Info{Version: "v0.3.0", Revision: "unknown", GoVersion: "go1.26.8"}},
		{"only the version stamped", stamp{version: "v0.3.0"}, vcs,
			Info{Version: "v0.3.0", Revision: "6f9eef8aaaa", Time: "2026-12-06T20:00:00Z", Modified: true, GoVersion: "go1.26.8"}},
		{"nothing recorded", stamp{}, &debug.BuildInfo{GoVersion: "go1.26.8"},
			Info{Version: "unknown", Revision: "unknown", GoVersion: "go1.26.8"}},
	} {
		if got := read(tc.s, tc.bi); got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
	if in := Read(); in.Version == "" || in.Revision == "" || in.GoVersion == "" {
		t.Errorf("Read() = %+v", in)
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in   Info
		want string
	}{
		{Info{Version: "v0.3.0", Revision: "abc", BuildDate: "2026-12-06T21:00:00Z", GoVersion: "go1.26.8"},
			"version v0.3.0, revision abc, built 2026-12-06T21:00:00Z, go1.26.8"},
		{Info{Version: "(devel)", Revision: "abc", Time: "2026-12-06T20:00:00Z", Modified: true, GoVersion: "go1.26.8"},
			"version (devel), revision abc+modified, committed 2026-12-06T20:00:00Z, go1.26.8"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
