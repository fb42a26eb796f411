package notifier

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestConfigValidate(t *testing.T) {
	ok := Defaults()
	ok.From = "Abuse Desk <abuse-desk@provider.test>"
	ok.FallbackAbuseContact = "abuse@provider.test"
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults with from and fallback: %v", err)
	}
	if err := Defaults().Validate(); err == nil || !strings.Contains(err.Error(), "from") ||
		!strings.Contains(err.Error(), "fallback_abuse_contact") {
		t.Errorf("defaults alone: %v", err)
	}

	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"template syntax":  {func(c *Config) { c.Templates.Body = write("b1", "{{.Account") }, "templates: body"},
		"template field":   {func(c *Config) { c.Templates.Subject = write("s1", "{{.NoSuchField}}") }, "templates: subject"},
		"template missing": {func(c *Config) { c.Templates.Body = filepath.Join(dir, "nope") }, "templates: body"},
		"tls mode":         {func(c *Config) { c.SMTP.TLS = "ssl" }, "smtp.tls"},
		"from injection":   {func(c *Config) { c.From = "a@b.c\r\nBcc: x@y.z" }, "from"},
		"retry":            {func(c *Config) { c.RetryMax = c.RetryMin / 2 }, "retry_min"},
		"eml dir":          {func(c *Config) { c.EMLDir = filepath.Join(dir, "missing") }, "eml_dir"},
		"tag":              {func(c *Config) { c.SubjectTag = "[AUP]\n" }, "subject_tag"},
		"password alone":   {func(c *Config) { c.SMTP.Password = "x" }, "smtp.password"},
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error about %s", err, tc.want)
			}
		})
	}
	c := ok
	c.Templates.Subject = write("s2", "Custom {{.Account}} {{datetime .SuspendedAt}}")
	if err := c.Validate(); err != nil {
		t.Errorf("custom template: %v", err)
	}
}

func TestSecretDoesNotShow(t *testing.T) {
	c := Defaults()
	c.SMTP.Password = "hunter2"
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{string(y), string(j), fmt.Sprintf("%v %+v %#v %s", c, c, c, c.SMTP.Password)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password shows: %s", s)
		}
	}
	if !strings.Contains(string(y), "password: <secret>") {
		t.Errorf("yaml: %s", y)
	}
	var back Config
	if err := yaml.Unmarshal([]byte("smtp:\n  password: pw\n  timeout: 5s\n"), &back); err != nil {
		t.Fatal(err)
	}
	if string(back.SMTP.Password) != "pw" || back.SMTP.Timeout.Seconds() != 5 {
		t.Errorf("decoded %+v", back.SMTP)
	}
}
