package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestPackageContents checks deploy/packaging/nfpm.yaml against the tree:
// every file it packages exists (scripts/check-release builds and installs
// the .deb itself), the units and the config go where the docs say, and
// the maintainer scripts exist.
func TestPackageContents(t *testing.T) {
	raw, err := os.ReadFile("packaging/nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Contents []struct {
			Src, Dst, Type string
		} `yaml:"contents"`
		Scripts map[string]string `yaml:"scripts"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	dst := map[string]string{}
	for _, c := range cfg.Contents {
		dst[c.Dst] = c.Type
		if c.Src == "" || strings.Contains(c.Src, "${") {
			continue // a directory, or a file scripts/release builds
		}
		if _, err := os.Stat(filepath.Join("..", c.Src)); err != nil {
			t.Errorf("%s: %v", c.Dst, err)
		}
	}
	for path, typ := range map[string]string{
		"/usr/bin/aupd": "", "/usr/bin/aupctl": "", "/usr/bin/aupd-sessiond": "",
		"/usr/lib/systemd/system/aupd.service": "", "/usr/lib/systemd/system/aupd-sessiond.service": "",
		"/usr/lib/sysusers.d/aupd.conf": "",
		"/etc/aupd/aupd.yml":            "config|noreplace", "/etc/aupd/sessiond.yml": "config|noreplace",
		"/var/lib/aupd": "dir",
	} {
		if got, ok := dst[path]; !ok || got != typ {
			t.Errorf("%s: packaged %v with type %q, want type %q", path, ok, got, typ)
		}
	}
	for _, s := range []string{"postinstall", "preremove", "postremove"} {
		p := cfg.Scripts[s]
		if fi, err := os.Stat(filepath.Join("..", p)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("script %s (%q): %v", s, p, err)
		}
	}
}
