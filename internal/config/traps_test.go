package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfig writes a config file into a fresh directory and returns its
// path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "aupd.yml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNumbersThatAnIntegerCannotHoldAreRefused(t *testing.T) {
	for _, v := range []string{"10.5", "1e1", "0x10", "1_000", "10.0"} {
		_, err := Parse([]byte("aup:\n  threshold: " + v + "\n"))
		if err == nil || !strings.Contains(err.Error(), "aup.threshold") || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("threshold %s: want an error naming aup.threshold on line 2, got %v", v, err)
		}
	}
	_, err := Parse([]byte("aup:\n  threshold: 0\n"))
	if err == nil || !strings.Contains(err.Error(), "aup.threshold") {
		t.Errorf("threshold 0 accepted: %v", err)
	}
	_, err = Parse([]byte("companies:\n  - {id: a, domains: [a.example], threshold: 2.5}\n"))
	if err == nil || !strings.Contains(err.Error(), "companies[0].threshold") {
		t.Errorf("company threshold 2.5: %v", err)
	}
	if _, err := Parse([]byte("aup:\n  threshold: 12\nnotifier: {eml_dir: " + t.TempDir() + "}\n")); err != nil {
		t.Errorf("a whole threshold refused: %v", err)
	}
}

func TestValidationErrorsNameFileKeyAndLine(t *testing.T) {
	path := writeConfig(t, "log:\n  level: info\n  format: xml\nnats:\n  consumer:\n    batch: 0\n")
	_, err := Load(path)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	msg := err.Error()
	for _, want := range []string{path, "line 3: log.format", "line 6: nats.consumer.batch"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// A nested validator's key is named too.
	path = writeConfig(t, "notifier:\n  from: not an address\n  eml_dir: notices\n")
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "line 2: notifier: from") {
		t.Errorf("notifier error not located: %v", err)
	}
}

func TestSMTPConfiguredSendsBySMTP(t *testing.T) {
	path := writeConfig(t, "notifier:\n  smtp: {host: relay.example, port: 25, tls: none}\n  from: a@b.example\n  fallback_abuse_contact: abuse@b.example\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Notifier.EMLDir != "" {
		t.Errorf("smtp configured, but notices go to files in %q", cfg.Notifier.EMLDir)
	}
	path = writeConfig(t, "notifier:\n  smtp: {host: relay.example}\n  eml_dir: notices\n")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "notifier.eml_dir") || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("smtp and eml_dir both set: %v", err)
	}
	// Neither: the .eml default, under data_dir.
	path = writeConfig(t, "data_dir: state\n")
	cfg, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Dir(path), "state", "notices"); cfg.Notifier.EMLDir != want {
		t.Errorf("eml_dir %q, want %q", cfg.Notifier.EMLDir, want)
	}
}

func TestRelativePathsResolveAgainstTheConfigFile(t *testing.T) {
	path := writeConfig(t, "data_dir: var\nnats: {embedded: {store_dir: js}}\nnotifier: {eml_dir: out}\n")
	other := t.TempDir()
	t.Chdir(other)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	for got, want := range map[string]string{
		cfg.DataDir: filepath.Join(dir, "var"), cfg.NATS.Embedded.StoreDir: filepath.Join(dir, "js"), cfg.Notifier.EMLDir: filepath.Join(dir, "out"),
	} {
		if got != want {
			t.Errorf("path %q, want %q", got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(other, "out")); err == nil {
		t.Error("eml_dir created in the working directory")
	}
}

func TestRedisAutostartOnlyWhenAskedAndNeverWithAnAddress(t *testing.T) {
	if Default().Redis.Autostart {
		t.Fatal("autostart is on by default")
	}
	cfg, err := Load(writeConfig(t, "notifier: {eml_dir: n}\n"))
	if err != nil || cfg.Redis.Autostart {
		t.Fatalf("autostart %v, err %v", cfg != nil && cfg.Redis.Autostart, err)
	}
	t.Setenv(EnvRedisAutostart, "1")
	cfg, err = Load(writeConfig(t, "notifier: {eml_dir: n}\n"))
	if err != nil || !cfg.Redis.Autostart {
		t.Fatalf("asked for autostart: %v, err %v", cfg != nil && cfg.Redis.Autostart, err)
	}
	if _, err := Load(writeConfig(t, "redis: {addrs: [\"127.0.0.1:6379\"]}\nnotifier: {eml_dir: n}\n")); err == nil || !strings.Contains(err.Error(), "redis.autostart") {
		t.Errorf("autostart with a configured address: %v", err)
	}
	t.Setenv(EnvRedisAutostart, "")
	t.Setenv(EnvRedisAddrs, "10.1.2.3:6379")
	if _, err := Load(writeConfig(t, "redis: {autostart: true}\nnotifier: {eml_dir: n}\n")); err == nil || !strings.Contains(err.Error(), "redis.autostart") {
		t.Errorf("autostart with AUPD_REDIS_ADDRS: %v", err)
	}
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvRedisPassword+FileSuffix, pw)
	cfg, err := Load(writeConfig(t, "notifier: {eml_dir: n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.Redis.Password) != "s3cret" {
		t.Errorf("password from file %q", string(cfg.Redis.Password))
	}
	t.Setenv(EnvRedisPassword, "also")
	if _, err := Load(writeConfig(t, "notifier: {eml_dir: n}\n")); err == nil || !strings.Contains(err.Error(), EnvRedisPassword+FileSuffix) {
		t.Errorf("both set: %v", err)
	}
	t.Setenv(EnvRedisPassword, "")
	t.Setenv(EnvRedisPassword+FileSuffix, filepath.Join(dir, "missing"))
	if _, err := Load(writeConfig(t, "notifier: {eml_dir: n}\n")); err == nil {
		t.Error("a missing secret file accepted")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://alice:hunter2@n1:4222":            "nats://alice:xxxxx@n1:4222",
		"nats://tok3n@n1:4222":                    "nats://xxxxx@n1:4222",
		"nats://n1:4222":                          "nats://n1:4222",
		"nats://a:p1@n1:4222,nats://b:p2@n2:4222": "nats://a:xxxxx@n1:4222,nats://b:xxxxx@n2:4222",
		"":                       "",
		"tls://u:p%40ss@n1:4443": "tls://u:xxxxx@n1:4443",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(RedactURL(in), "hunter2") {
			t.Errorf("RedactURL(%q) shows the password", in)
		}
	}
}
