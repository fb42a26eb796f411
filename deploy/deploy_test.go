package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/internal/config"
)

func TestExampleConfigIsValid(t *testing.T) {
	cfg, err := config.Load("aupd.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	// Its tokens are commented out: an example's token would be everyone's.
	if len(cfg.Companies) != 2 || len(cfg.Auth.Tokens) != 0 || cfg.Notifier.EMLDir != "" {
		t.Errorf("example config lost its examples: %d companies, %d tokens, eml_dir %q", len(cfg.Companies), len(cfg.Auth.Tokens), cfg.Notifier.EMLDir)
	}
}

// TestExampleConfigShowsEveryKey checks that every key of the
// configuration appears in the example, so it stays a complete reference.
func TestExampleConfigShowsEveryKey(t *testing.T) {
	var defaults, example map[string]any
	b, err := yaml.Marshal(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &defaults); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("aupd.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &example); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, d, e map[string]any)
	walk = func(path string, d, e map[string]any) {
		for k, v := range d {
			ev, ok := e[k]
			if !ok {
				t.Errorf("aupd.example.yml lacks %s%s", path, k)
				continue
			}
			if dm, ok := v.(map[string]any); ok {
				em, _ := ev.(map[string]any)
				walk(path+k+".", dm, em)
			}
		}
	}
	walk("", defaults, example)
}

type compose struct {
	Services map[string]struct {
		Image string `yaml:"image"`
		Build struct {
			Context string            `yaml:"context"`
			Args    map[string]string `yaml:"args"`
		} `yaml:"build"`
		Command     []string          `yaml:"command"`
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
		DependsOn   map[string]any    `yaml:"depends_on"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// TestComposeFile validates docker-compose.yml: the four services, JetStream
// and AOF turned on, the files aupd mounts exist, and its config is valid
// with the environment compose gives it.
func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, s := range []string{"nats", "redis", "smtp", "aupd"} {
		if _, ok := c.Services[s]; !ok {
			t.Fatalf("service %s missing", s)
		}
	}
	if !slices.Contains(c.Services["nats"].Command, "-js") {
		t.Error("nats runs without JetStream")
	}
	if !strings.Contains(strings.Join(c.Services["redis"].Command, " "), "--appendonly yes") {
		t.Error("redis runs without AOF")
	}
	a := c.Services["aupd"]
	if a.Build.Context != "." {
		t.Errorf("aupd build context %q", a.Build.Context)
	}
	// The Dockerfile stamps what compose passes (docs/releasing.md).
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, arg := range []string{"VERSION", "REVISION", "BUILD_DATE"} {
		if _, ok := a.Build.Args[arg]; !ok {
			t.Errorf("compose passes no build arg %s", arg)
		}
		if !strings.Contains(string(dockerfile), "ARG "+arg) || !strings.Contains(string(dockerfile), "=$"+arg) {
			t.Errorf("the Dockerfile does not stamp %s", arg)
		}
	}
	if _, err := os.Stat("../Dockerfile"); err != nil {
		t.Error(err)
	}
	for _, dep := range []string{"nats", "redis", "smtp"} {
		if _, ok := a.DependsOn[dep]; !ok {
			t.Errorf("aupd does not depend on %s", dep)
		}
	}
	var cfgPath string
	for _, v := range a.Volumes {
		host, _, _ := strings.Cut(v, ":")
		if _, err := os.Stat(filepath.Join("..", host)); err != nil {
			t.Errorf("volume %s: %v", v, err)
		}
		if strings.HasSuffix(host, ".yml") {
			cfgPath = filepath.Join("..", host)
		}
	}
	for name := range a.Environment {
		t.Setenv(name, a.Environment[name])
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("aupd's compose config: %v", err)
	}
	if cfg.NATS.URL != "nats://nats:4222" || cfg.Redis.Addrs[0] != "redis:6379" || cfg.Notifier.SMTP.Host != "smtp" {
		t.Errorf("compose config does not point at the compose services: %s %v %s", cfg.NATS.URL, cfg.Redis.Addrs, cfg.Notifier.SMTP.Host)
	}
	for _, vol := range []string{"nats-data", "redis-data"} {
		if _, ok := c.Volumes[vol]; !ok {
			t.Errorf("volume %s not declared", vol)
		}
	}
}
