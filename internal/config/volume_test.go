package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/rules"
)

func TestVolumeLimitsAreOffByDefault(t *testing.T) {
	c := Default()
	if len(c.AUP.Volume) != 0 || len(c.AUP.VolumeAllowlist) != 0 {
		t.Fatalf("default volume limits: %+v", c.AUP.Volume)
	}
}

func TestVolumeLimits(t *testing.T) {
	cfg, err := Parse([]byte(`notifier: {eml_dir: ` + t.TempDir() + `}
aup:
  volume:
    - {name: hourly, window: 1h, recipients: 500, action: throttle}
    - {name: daily, window: 24h, recipients: 2000, action: suspend}
  volume_allowlist: [News@Example.COM]
companies:
  - id: acme
    domains: [acme.example]
    volume:
      - {name: bulk, window: 1h, messages: 5000, action: throttle}
    volume_allowlist: [Mailer@Acme.Example]
  - id: quiet
    domains: [quiet.example]
    volume: []
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []rules.VolumeLimit{
		{Name: "hourly", Window: time.Hour, Recipients: 500, Action: rules.VolumeThrottle},
		{Name: "daily", Window: 24 * time.Hour, Recipients: 2000, Action: rules.VolumeSuspend},
	}
	if len(cfg.AUP.Volume) != 2 || cfg.AUP.Volume[0] != want[0] || cfg.AUP.Volume[1] != want[1] {
		t.Errorf("aup.volume: %+v", cfg.AUP.Volume)
	}
	if cfg.AUP.VolumeAllowlist[0] != "news@example.com" {
		t.Errorf("volume allowlist not normalized: %v", cfg.AUP.VolumeAllowlist)
	}
	acme, quiet := cfg.Companies[0], cfg.Companies[1]
	if acme.Volume == nil || len(*acme.Volume) != 1 || (*acme.Volume)[0].Messages != 5000 {
		t.Errorf("company volume: %+v", acme.Volume)
	}
	if quiet.Volume == nil || len(*quiet.Volume) != 0 {
		t.Errorf("an empty company list must set no limits, not inherit: %+v", quiet.Volume)
	}
}

func TestVolumeErrorsNameKeyAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aupd.yml")
	doc := `aup:
  threshold: 0
  volume:
    - {name: hourly, window: 90s, recipients: 500, action: throttle}
    - {name: hourly, window: 1h, messages: 10, recipients: 5, action: block}
  volume_allowlist: [not-an-address]
companies:
  - id: acme
    domains: [acme.example]
    volume:
      - {name: bulk, window: 1h, messages: 70000, action: suspend}
notifier: {eml_dir: ` + t.TempDir() + `}
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil {
		t.Fatal("invalid volume limits accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"line 2: aup.threshold",
		"line 4: aup.volume[0].window: 1m30s is not a whole number of minutes",
		`line 5: aup.volume[1].name: "hourly" is used by an earlier limit`,
		"line 5: aup.volume[1]: set exactly one of messages and recipients",
		`line 5: aup.volume[1].action: "block" is not throttle or suspend`,
		`aup.volume_allowlist: "not-an-address"`,
		"line 11: companies[0].volume[0].messages: 70000 is more than 65000",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// The AUP rule's errors come first, in the order they always had.
	if strings.Index(msg, "aup.threshold") > strings.Index(msg, "aup.volume") {
		t.Errorf("aup.volume reported before aup.threshold:\n%s", msg)
	}
}
