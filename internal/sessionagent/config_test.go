package sessionagent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVanishBound(t *testing.T) {
	d := func(s int) *time.Duration { v := time.Duration(s) * time.Second; return &v }
	for _, tt := range []struct {
		k    Keepalive
		want time.Duration
	}{
		// The defaults: probes at 60, 75, 90, 105, 120 s; the one at 120
		// s is past the user timeout with probes unanswered.
		{Defaults().Keepalive, 120 * time.Second},
		{Keepalive{Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4, UserTimeout: d(0)}, 120 * time.Second},
		{Keepalive{Idle: 60 * time.Second, Interval: 10 * time.Second, Count: 9, UserTimeout: d(0)}, 150 * time.Second},
		{Keepalive{Idle: time.Second, Interval: time.Second, Count: 2, UserTimeout: d(3)}, 3 * time.Second},
		{Keepalive{Idle: 10 * time.Second, Interval: 4 * time.Second, Count: 2, UserTimeout: d(5)}, 14 * time.Second},
		{Keepalive{Off: true}, 0},
	} {
		if got := tt.k.VanishBound(); got != tt.want {
			t.Errorf("%+v: %s; want %s", tt.k, got, tt.want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	write := func(s string) string {
		p := filepath.Join(t.TempDir(), "sessiond.yml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := LoadConfig(write(""))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Lease != 20*time.Minute || cfg.RenewEvery != 10*time.Minute || cfg.OnError != "allow" || cfg.Keepalive.VanishBound() != 2*time.Minute {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg, err = LoadConfig(write("aupd_url: http://aupd:9390\nlease: 5m\non_error: refuse\nkeepalive:\n  idle: 30s\n  user_timeout: 0s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Lease != 5*time.Minute || cfg.RenewEvery != 150*time.Second || cfg.OnError != "refuse" ||
		cfg.Keepalive.Idle != 30*time.Second || *cfg.Keepalive.UserTimeout != 0 {
		t.Errorf("settings: %+v", cfg)
	}
	for _, bad := range []string{"lease_time: 5m\n", "on_error: maybe\n", "lease: 1500ms\n", "lease: 1m\nrenew_every: 1m\n",
		"aupd_url: aupd:9390\n", "keepalive:\n  count: 0\n  idle: 100000s\n"} {
		if _, err := LoadConfig(write(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		} else if !strings.Contains(err.Error(), "sessiond.yml") {
			t.Errorf("%q: error %v does not name the file", bad, err)
		}
	}
}
