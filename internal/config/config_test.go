package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := Parse([]byte("aup:\n  treshold: 5\n"))
	if err == nil || !strings.Contains(err.Error(), "treshold") {
		t.Fatalf("unknown key accepted: %v", err)
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`
log: {level: loud}
aup: {threshold: -1, mode: maybe, verdicts: [ham]}
nats: {consumer: {batch: 0, fill_wait: 1s}}
companies:
  - {id: a, domains: [x.example]}
  - {id: b, domains: [x.example]}
`))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"log.level", "aup.threshold", "aup.mode", "aup.verdicts", "nats.consumer.batch", "nats.consumer.fill_wait", "x.example belongs to both"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestEnvironmentOverridesAndSecretsStayHidden(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "aupd.yml")
	if err := os.WriteFile(path, []byte("notifier: {eml_dir: "+filepath.Join(dir, "notices")+"}\nredis: {password: from-file}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvNATSURL, "nats://a:4222,nats://b:4222")
	t.Setenv(EnvRedisAddrs, "r1:6379,r2:6379,r3:6379")
	t.Setenv(EnvRedisPassword, "hunter2")
	t.Setenv(EnvSMTPPassword, "smtp-secret")
	t.Setenv(EnvHTTPListen, "127.0.0.1:19390")
	t.Setenv(EnvNATSEmbeddedListen, "127.0.0.1:14223")
	t.Setenv(EnvPostfixListen, "127.0.0.1:20040")
	t.Setenv(EnvDovecotListen, "127.0.0.1:20041")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.URL != "nats://a:4222,nats://b:4222" || len(cfg.Redis.Addrs) != 3 || string(cfg.Redis.Password) != "hunter2" {
		t.Fatalf("environment not applied: %s %v", cfg.NATS.URL, cfg.Redis.Addrs)
	}
	if l := []string{cfg.HTTP.Listen, cfg.NATS.Embedded.Listen, cfg.Policy.Postfix.Listen, cfg.Policy.Dovecot.Listen}; !slices.Equal(l, []string{"127.0.0.1:19390", "127.0.0.1:14223", "127.0.0.1:20040", "127.0.0.1:20041"}) {
		t.Errorf("listeners not moved by the environment: %v", l)
	}
	if _, err := os.Stat(filepath.Join(dir, "notices")); err != nil {
		t.Errorf("eml_dir not created: %v", err)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", "smtp-secret"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("printed config shows a secret %q", secret)
		}
	}
	if !strings.Contains(string(out), "<secret>") {
		t.Error("printed config does not mark secrets")
	}
}

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	c.Notifier.EMLDir = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.NATS.Verdicts.MaxAge < 48*c.AUP.Window/24 {
		t.Errorf("verdict stream keeps %s, want at least 48h", c.NATS.Verdicts.MaxAge)
	}
}

func TestReplicaLoss(t *testing.T) {
	notices := "notifier: {eml_dir: " + t.TempDir() + "}\n"
	cfg, err := Parse([]byte(notices + "redis: {wait_replicas: 1, replica_loss: accept, replica_loss_after: 45s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.ReplicaLoss != "accept" || cfg.Redis.ReplicaLossAfter.Seconds() != 45 {
		t.Fatalf("replica_loss %q after %s", cfg.Redis.ReplicaLoss, cfg.Redis.ReplicaLossAfter)
	}
	if d := Default().Redis; d.ReplicaLoss != "hold" || d.ReplicaLossAfter.Seconds() != 30 {
		t.Fatalf("defaults: replica_loss %q after %s, want hold and 30s", d.ReplicaLoss, d.ReplicaLossAfter)
	}
	for _, bad := range []string{"replica_loss: drop", "replica_loss: ''", "replica_loss_after: 500ms", "replica_loss_after: 2h"} {
		_, err := Parse([]byte(notices + "redis: {" + bad + "}\n"))
		if err == nil || !strings.Contains(err.Error(), "redis.replica_loss") {
			t.Errorf("%s: accepted (%v)", bad, err)
		}
	}
}
