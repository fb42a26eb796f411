package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/internal/config"
)

// TestComposeIsPinnedAndLocal: images pinned by version and digest, nothing published
// on all interfaces, and a healthcheck for aupd.
func TestComposeIsPinnedAndLocal(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image       string   `yaml:"image"`
			Ports       []string `yaml:"ports"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	// A version tag and the digest of its index (image:tag@sha256:...).
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:v?[0-9]+\.[0-9]+\.[0-9]+(-[a-z0-9.]+)?@sha256:[0-9a-f]{64}$`)
	for name, s := range c.Services {
		if s.Image != "" && !pinned.MatchString(s.Image) {
			t.Errorf("service %s: image %q is not pinned to a version and its digest", name, s.Image)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s publishes %q on every interface", name, p)
			}
		}
	}
	if hc := c.Services["aupd"].Healthcheck.Test; len(hc) < 2 || !strings.Contains(strings.Join(hc, " "), "ready") {
		t.Errorf("aupd healthcheck %v", hc)
	}
}

// TestSystemdUnit checks the systemd units (aupd, and the aupd-sessiond
// agent of Dovecot hosts) with systemd-analyze verify (any warning fails)
// and their hardening with systemd-analyze security.
func TestSystemdUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): the unit is not verified")
	}
	for _, u := range []struct {
		name, bin string
		want      []string
		// exposure is the most systemd-analyze security may say.
		exposure float64
	}{
		{"aupd", "/usr/bin/aupd", []string{"User=aupd", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes",
			"ProtectSystem=strict", "KillSignal=SIGTERM", "ReadWritePaths=-/var/spool/postfix/aupd\n"}, 2},
		{"aupd-sessiond", "/usr/bin/aupd-sessiond", []string{"CapabilityBoundingSet=\n", "NoNewPrivileges=yes",
			"ProtectSystem=strict", "StateDirectory=aupd-sessiond", "RuntimeDirectory=aupd-sessiond", "Restart=always"}, 2},
	} {
		t.Run(u.name, func(t *testing.T) {
			unit, err := os.ReadFile("systemd/" + u.name + ".service")
			if err != nil {
				t.Fatal(err)
			}
			text := string(unit)
			for _, want := range u.want {
				if !strings.Contains(text, want) {
					t.Errorf("the unit lacks %q", want)
				}
			}
			// verify checks that the binary exists: point it at an
			// executable of the same name in a temporary directory.
			dir := t.TempDir()
			bin := filepath.Join(dir, u.name)
			if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, u.name+".service")
			if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, u.bin, bin)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("systemd-analyze verify: %v\n%s", err, out)
			}
			out, err = exec.Command("systemd-analyze", "security", "--offline=yes", path).CombinedOutput()
			if err != nil {
				t.Logf("systemd-analyze security --offline unavailable: %v", err)
				return
			}
			m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(u.name) + `.service: ([0-9.]+)`).FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("no exposure level in:\n%s", out)
			}
			if level, _ := strconv.ParseFloat(m[1], 64); level > u.exposure {
				t.Errorf("exposure level %s, want at most %.1f (hardening lost?)", m[1], u.exposure)
			}
		})
	}
	if _, err := os.Stat("systemd/aupd.sysusers"); err != nil {
		t.Error(err)
	}
}

// TestKubernetesManifests checks what the schema validator (scripts/
// check-deploy) cannot: probes, graceful termination, secrets from files.
func TestKubernetesManifests(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Grace      int `yaml:"terminationGracePeriodSeconds"`
					Containers []struct {
						Env []struct {
							Name, Value string
						}
						Liveness  map[string]any `yaml:"livenessProbe"`
						Readiness struct {
							HTTPGet struct{ Path string } `yaml:"httpGet"`
						} `yaml:"readinessProbe"`
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	ps := d.Spec.Template.Spec
	if ps.Grace < 30 || len(ps.Containers) != 1 {
		t.Fatalf("grace %d, %d containers", ps.Grace, len(ps.Containers))
	}
	c := ps.Containers[0]
	if c.Liveness == nil || c.Readiness.HTTPGet.Path != "/readyz" {
		t.Errorf("probes: liveness %v, readiness %q", c.Liveness, c.Readiness.HTTPGet.Path)
	}
	for _, e := range c.Env {
		if strings.Contains(e.Name, "PASSWORD") || strings.Contains(e.Name, "API_KEY") {
			if !strings.HasSuffix(e.Name, "_FILE") || !strings.HasPrefix(e.Value, "/run/secrets/") {
				t.Errorf("secret %s is not read from a file", e.Name)
			}
		}
	}
	for _, f := range []string{"configmap.yaml", "secret.yaml", "service.yaml", "pdb.yaml", "servicemonitor.yaml", "kustomization.yaml"} {
		if _, err := os.Stat(filepath.Join("kubernetes", f)); err != nil {
			t.Error(err)
		}
	}
}

// TestKubernetesConfigIsValid loads the ConfigMap's aupd.yml with the
// Deployment's environment, secrets read from files as in the pod.
func TestKubernetesConfigIsValid(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "aupd.yml")
	text := strings.ReplaceAll(cm.Data["aupd.yml"], "/var/lib/aupd", filepath.Join(dir, "data"))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err = os.ReadFile("kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Env []struct{ Name, Value string }
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		v := e.Value
		if strings.HasSuffix(e.Name, "_FILE") {
			v = filepath.Join(dir, filepath.Base(e.Value))
			if err := os.WriteFile(v, []byte("s3cret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv(e.Name, v)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("the ConfigMap's config with the Deployment's environment: %v", err)
	}
	if cfg.Notifier.EMLDir != "" || string(cfg.Redis.Password) != "s3cret" || cfg.Redis.Autostart || cfg.HTTP.Listen != "0.0.0.0:9390" {
		t.Errorf("eml_dir %q, redis password from file %v, autostart %v, listen %s", cfg.Notifier.EMLDir, cfg.Redis.Password != "", cfg.Redis.Autostart, cfg.HTTP.Listen)
	}
}
