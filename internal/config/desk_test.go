package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/aupd/aupd/internal/auth"
)

// TestDeskSection: the desk is off by default; its link key comes from
// the environment and never prints; a public URL without a key is an
// error at load time.
func TestDeskSection(t *testing.T) {
	if Default().Desk.Enabled {
		t.Fatal("the desk is on by default")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "aupd.yml")
	doc := "notifier: {eml_dir: " + filepath.Join(dir, "notices") + "}\ndesk: {enabled: true, public_url: https://aupd.example/desk}\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "desk: link_key") {
		t.Fatalf("public_url without a key: %v", err)
	}
	key := strings.Repeat("desk-key-", 5)
	t.Setenv(EnvDeskLinkKey, key)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.Desk.LinkKey) != key || cfg.Desk.LinkTTL.Hours() != 168 {
		t.Errorf("desk %+v", cfg.Desk)
	}
	out, _ := yaml.Marshal(cfg)
	if strings.Contains(string(out), key) {
		t.Error("printed config shows the link key")
	}
	if _, err := Parse([]byte("desk: {enabled: true, colour: blue}\n")); err == nil {
		t.Error("unknown desk key accepted")
	}
}

// TestPlaceholderSecrets: check-config refuses a secret left at an
// example's placeholder, as deploy/kubernetes/secret.yaml ships them.
func TestPlaceholderSecrets(t *testing.T) {
	c := Default()
	c.Policy.Dovecot.APIKey = "change-me"
	c.Policy.Dovecot.PreviousAPIKey = "CHANGE-ME-too"
	c.Redis.Password = "CHANGE-ME-redis"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "policy.dovecot.api_key: an example's placeholder") || !strings.Contains(err.Error(), "redis.password") ||
		!strings.Contains(err.Error(), "policy.dovecot.previous_api_key: an example's placeholder") {
		t.Fatalf("placeholders taken: %v", err)
	}
	c.Policy.Dovecot.APIKey, c.Policy.Dovecot.PreviousAPIKey, c.Redis.Password = "k7Qx9-real-key-2f8a", "p4st-real-key-77c1", "r3al-redis-pw-91c"
	if err := c.Validate(); err != nil && strings.Contains(err.Error(), "placeholder") {
		t.Fatalf("real secrets refused: %v", err)
	}
}

// TestExampleTokenHashesRefused: a token whose hash is that of a token the
// repository's examples shipped is everyone's token, and a value with the
// marker anywhere ("example-dovecot-key-change-me") is a placeholder.
func TestExampleTokenHashesRefused(t *testing.T) {
	c := Default()
	c.Auth.Tokens = []auth.TokenConfig{
		{Name: "ops", Role: auth.RoleAdmin, Hash: auth.HashToken("example-admin-token-change-me")},
		{Name: "mine", Role: auth.RoleAdmin, Hash: auth.HashToken(auth.NewToken())},
	}
	c.Policy.Dovecot.APIKey = "example-dovecot-key-change-me"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "auth.tokens[0] (ops): the hash of an example's token") ||
		strings.Contains(err.Error(), "(mine)") || !strings.Contains(err.Error(), "policy.dovecot.api_key") {
		t.Fatalf("got %v", err)
	}
}

// TestValidateOrderIsStable: the joined error of a config with many
// problems reads the same on every run.
func TestValidateOrderIsStable(t *testing.T) {
	bad := func() string {
		c := Default()
		c.NATS.Verdicts.Name, c.NATS.Accounts.Name, c.NATS.Dead.Name = "a.b", "c d", "e*"
		c.Jobs.Retention, c.Jobs.OutboxSweep = "nope", "never"
		c.Redis.Password, c.Desk.LinkKey = "change-me", "secret"
		c.Notifier.From = "not an address"
		err := c.Validate()
		if err == nil {
			t.Fatal("no error")
		}
		return err.Error()
	}
	first := bad()
	for range 20 {
		if again := bad(); again != first {
			t.Fatalf("the error changed between runs:\n%s\n---\n%s", first, again)
		}
	}
}
