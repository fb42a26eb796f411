package policy_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/rules"
)

// pinnedClock is aupd's clock in the volume test: the real time when the
// test starts, moved by the test to a window's end. aupd's Redis scripts
// read it too (app.Options.Now), as they read Redis's clock in
// production.
type pinnedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *pinnedClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *pinnedClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The volume limits of TestMailstackVolume.
var (
	burstLimit  = rules.VolumeLimit{Name: "burst", Window: 10 * time.Minute, Messages: 3, Action: rules.VolumeThrottle}
	hourlyLimit = rules.VolumeLimit{Name: "hourly", Window: time.Hour, Recipients: 8, Action: rules.VolumeSuspend}
)

// TestMailstackVolume runs the private Postfix, configured from
// deploy/postfix as shipped (the submission services ask aupd at the end
// of DATA), against an aupd with volume limits, and submits with swaks.
func TestMailstackVolume(t *testing.T) {
	// Start a minute on a bucket boundary, so that a window's end is a
	// known time.
	clk := &pinnedClock{t: time.Now().Truncate(time.Hour).Add(time.Hour)}
	ms := startMailstackWith(t, stackOptions{now: clk.now, aup: func(a *config.AUP) {
		a.Volume = []rules.VolumeLimit{burstLimit, hourlyLimit}
	}})

	t.Run("a throttle gives temporary failures that end with the window", func(t *testing.T) {
		sender := "burst@" + domain
		// Transactions that never reach the end of DATA are not counted:
		// cut off after RCPT, or after DATA was refused.
		for range 4 {
			out, _ := runSwaks(t, "--server", ms.submission, "--tls", "--from", sender, "--to", "friend@elsewhere.test",
				"--auth", "PLAIN", "--auth-user", sender, "--auth-password", password, "--quit-after", "RCPT")
			if !strings.Contains(out, "250 2.1.5 Ok") {
				t.Fatalf("RCPT was not accepted:\n%s", out)
			}
		}
		// 3 messages in 10 minutes: the fourth crosses, and is accepted.
		for i := range 4 {
			out, err := swaksTLS(t, ms.submission, "--tls", sender, "friend@elsewhere.test", password)
			if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
				t.Fatalf("message %d: %v\n%s", i+1, err, out)
			}
		}
		const want = "452 4.7.1 <friend@elsewhere.test>: Recipient address rejected: Sending limit reached for this account, try again later"
		for _, mode := range []string{"--tls", "--tlsc"} {
			addr := ms.submission
			if mode == "--tlsc" {
				addr = ms.smtps
			}
			out, err := swaksTLS(t, addr, mode, sender, "friend@elsewhere.test", password)
			if err == nil || !strings.Contains(out, want) {
				t.Fatalf("%s after the crossing: %v; want %q in:\n%s", mode, err, want, out)
			}
		}
		// The four messages leave the window together, 10 minutes after
		// their bucket began; a moment before, the throttle still holds.
		clk.add(10*time.Minute - time.Second)
		if out, err := swaksTLS(t, ms.submission, "--tls", sender, "friend@elsewhere.test", password); err == nil || !strings.Contains(out, want) {
			t.Fatalf("a moment before the window's end: %v\n%s", err, out)
		}
		clk.add(time.Second)
		out, err := swaksTLS(t, ms.submission, "--tls", sender, "friend@elsewhere.test", password)
		if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
			t.Fatalf("once the window has moved on: %v\n%s", err, out)
		}
		if n := ms.policyRequests(t, "postfix", "throttled"); n != 3 {
			t.Errorf("%v requests answered with the throttle; want 3", n)
		}
	})
}
