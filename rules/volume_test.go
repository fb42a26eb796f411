package rules

import (
	"strings"
	"testing"
	"time"
)

func TestValidateVolume(t *testing.T) {
	ok := VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 500, Action: VolumeThrottle}
	daily := VolumeLimit{Name: "daily", Window: 24 * time.Hour, Recipients: 2000, Action: VolumeSuspend}
	if err := ValidateVolume([]VolumeLimit{ok, daily}); err != nil {
		t.Fatalf("valid limits refused: %v", err)
	}
	if err := ValidateVolume(nil); err != nil {
		t.Fatalf("no limits refused: %v", err)
	}
	with := func(f func(*VolumeLimit)) []VolumeLimit {
		l := ok
		f(&l)
		return []VolumeLimit{l}
	}
	tests := []struct {
		name   string
		limits []VolumeLimit
		want   string
	}{
		{"bad name", with(func(l *VolumeLimit) { l.Name = "Hourly!" }), `[0].name: "Hourly!"`},
		{"empty name", with(func(l *VolumeLimit) { l.Name = "" }), `[0].name: ""`},
		{"duplicate name", []VolumeLimit{ok, ok}, `[1].name: "hourly" is used by an earlier limit`},
		{"short window", with(func(l *VolumeLimit) { l.Window = 30 * time.Second }), "[0].window: 30s is not a whole number of minutes"},
		{"odd window", with(func(l *VolumeLimit) { l.Window = 90 * time.Second }), "[0].window: 1m30s"},
		{"long window", with(func(l *VolumeLimit) { l.Window = 8 * 24 * time.Hour }), "[0].window: 192h0m0s"},
		{"both counts", with(func(l *VolumeLimit) { l.Messages = 10 }), "[0]: set exactly one of messages and recipients"},
		{"no count", with(func(l *VolumeLimit) { l.Recipients = 0 }), "[0]: set exactly one of messages and recipients"},
		{"negative", with(func(l *VolumeLimit) { l.Messages = -1 }), "[0]: messages and recipients must not be negative"},
		{"too many", with(func(l *VolumeLimit) { l.Recipients = 70000 }), "[0].recipients: 70000 is more than 65000"},
		{"bad action", with(func(l *VolumeLimit) { l.Action = "block" }), `[0].action: "block" is not throttle or suspend`},
		{"no action", with(func(l *VolumeLimit) { l.Action = "" }), `[0].action: "" is not throttle or suspend`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateVolume(tc.limits)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want %q", err, tc.want)
			}
		})
	}
	var many []VolumeLimit
	for i := range 9 {
		many = append(many, VolumeLimit{Name: string(rune('a' + i)), Window: time.Duration(i+1) * time.Hour, Messages: 10, Action: VolumeThrottle})
	}
	err := ValidateVolume(many)
	if err == nil || !strings.Contains(err.Error(), ": 9 limits, at most 8") || !strings.Contains(err.Error(), ": 9 different pairs of window and count (messages or recipients), at most 4") {
		t.Errorf("nine limits in nine windows: %v", err)
	}
}

func TestVolumePolicy(t *testing.T) {
	throttle := VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 500, Action: VolumeThrottle}
	suspend := VolumeLimit{Name: "daily", Window: 24 * time.Hour, Recipients: 2000, Action: VolumeSuspend}
	own := []VolumeLimit{{Name: "bulk", Window: time.Hour, Messages: 50, Action: VolumeSuspend}}
	none := []VolumeLimit{}
	p := Provider{Mode: ModeEnforce, Volume: []VolumeLimit{throttle, suspend}, VolumeAllowlist: []string{"news@example.com"}}

	pol := p.VolumeFor("alice@example.com", nil, false)
	if len(pol.Limits) != 2 || !pol.Enforced() || !pol.Throttles() {
		t.Errorf("provider's policy: %+v", pol)
	}
	if got := pol.OnCrossing(throttle); got != "throttle" {
		t.Errorf("on crossing a throttle: %s", got)
	}
	if got := pol.OnCrossing(suspend); got != "suspend" {
		t.Errorf("on crossing a suspend limit: %s", got)
	}
	if pol := p.VolumeFor("alice@example.com", &own, false); len(pol.Limits) != 1 || pol.Limits[0].Name != "bulk" || pol.Throttles() {
		t.Errorf("company's own limits: %+v", pol)
	}
	if pol := p.VolumeFor("alice@example.com", &none, false); len(pol.Limits) != 0 || pol.Throttles() {
		t.Errorf("company without limits: %+v", pol)
	}
	for name, pol := range map[string]VolumePolicy{
		"provider's allowlist": p.VolumeFor("news@example.com", nil, false),
		"company's allowlist":  p.VolumeFor("alice@example.com", nil, true),
		"shadow mode":          Provider{Mode: ModeShadow, Volume: p.Volume}.VolumeFor("alice@example.com", nil, false),
	} {
		if pol.Enforced() || pol.Throttles() || pol.OnCrossing(suspend) != "report" || pol.OnCrossing(throttle) != "report" {
			t.Errorf("%s: %+v enforces", name, pol)
		}
	}
	if throttle.Rule() != "volume:hourly" || throttle.Kind() != VolumeRecipients || throttle.Max() != 500 || throttle.Bucket() != 5*time.Minute {
		t.Errorf("limit accessors: %s %s %d %s", throttle.Rule(), throttle.Kind(), throttle.Max(), throttle.Bucket())
	}
	if own[0].Kind() != VolumeMessages {
		t.Errorf("a message limit's kind: %s", own[0].Kind())
	}
}
