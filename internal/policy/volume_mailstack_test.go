package policy_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

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
	clk := testutil.NewClock(time.Now().Truncate(time.Hour).Add(time.Hour)) // moved by the test to a window's end; aupd's scripts read it too
	ms := startMailstackWith(t, stackOptions{now: clk.Now, aup: func(a *config.AUP) {
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
		clk.Add(10*time.Minute - time.Second)
		if out, err := swaksTLS(t, ms.submission, "--tls", sender, "friend@elsewhere.test", password); err == nil || !strings.Contains(out, want) {
			t.Fatalf("a moment before the window's end: %v\n%s", err, out)
		}
		clk.Add(time.Second)
		out, err := swaksTLS(t, ms.submission, "--tls", sender, "friend@elsewhere.test", password)
		if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
			t.Fatalf("once the window has moved on: %v\n%s", err, out)
		}
		if n := ms.policyRequests(t, "postfix", "throttled"); n != 3 {
			t.Errorf("%v requests answered with the throttle; want 3", n)
		}
	})

	t.Run("a suspend limit: the next submission refused, one account event, one notice", func(t *testing.T) {
		sender := "bulk@" + domain
		const client = "127.0.77.3"
		to := "a@elsewhere.test,b@elsewhere.test,c@elsewhere.test"
		submit := func(mode, addr string) (string, error) {
			return runSwaksFrom(t, client, "--server", addr, mode, "--from", sender, "--to", to,
				"--auth", "PLAIN", "--auth-user", sender, "--auth-password", password)
		}
		// 3 recipients a message, 8 an hour: the third message crosses
		// the limit, and is accepted.
		for i := range 3 {
			out, err := submit("--tls", ms.submission)
			if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
				t.Fatalf("message %d: %v\n%s", i+1, err, out)
			}
		}
		const want = "554 5.7.1 <a@elsewhere.test>: Recipient address rejected: Sending is suspended for this account"
		for _, mode := range []string{"--tls", "--tlsc"} {
			addr := ms.submission
			if mode == "--tlsc" {
				addr = ms.smtps
			}
			if out, err := submit(mode, addr); err == nil || !strings.Contains(out, want) {
				t.Fatalf("%s after the crossing: %v; want %q in:\n%s", mode, err, want, out)
			}
		}
		var evs []events.AccountEvent
		waitFor(t, "the suspension's account event", func() bool {
			evs = ms.accountEvents(t, sender)
			return len(evs) > 0
		})
		var notices []string
		waitFor(t, "the notice", func() bool {
			notices = ms.noticeTexts(t)
			return len(notices) > 0
		})
		// Both were there to be seen once the first of each was: the
		// outbox publishes a suspension's event once, and the notifier
		// renders one notice per suspension.
		evs, notices = ms.accountEvents(t, sender), ms.noticeTexts(t)
		if len(evs) != 1 || evs[0].Type != events.TypeSuspended || evs[0].Suspension == nil || evs[0].Suspension.Rule != "volume:hourly" {
			t.Fatalf("account events of %s: %+v", sender, evs)
		}
		if v := evs[0].Suspension.Volume; v == nil || v.Recipients == nil || *v.Recipients != 9 || !slices.Equal(v.Clients, []string{client}) {
			t.Errorf("the suspension's volume: %+v", v)
		}
		if len(notices) != 1 {
			t.Fatalf("%d notices; want 1", len(notices))
		}
		for _, w := range []string{"Subject: [AUP] Sending suspended for " + sender, "sending volume limit exceeded",
			"Our limit (volume:hourly) is", "mail to 9 recipients", "    " + client, "The volume rule volume:hourly crossed without samples"} {
			if !strings.Contains(notices[0], w) {
				t.Errorf("the notice lacks %q:\n%s", w, notices[0])
			}
		}
	})
}

// accountEvents are the account events aupd published about account.
func (ms *mailstack) accountEvents(t testing.TB, account string) []events.AccountEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js := testutil.JetStream(t, ms.natsURL)
	c, err := js.OrderedConsumer(ctx, "AUP_ACCOUNTS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.AccountEvent
	for range info.NumPending {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var ev events.AccountEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Account == account {
			out = append(out, ev)
		}
	}
	return out
}

// noticeTexts are the notices aupd wrote (notifier.eml_dir): each its
// header and its decoded text parts, the body and evidence.txt.
func (ms *mailstack) noticeTexts(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(ms.notices, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
		if err != nil {
			t.Fatal(err)
		}
		text := "Subject: " + subject + "\n"
		_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		mr := multipart.NewReader(m.Body, params["boundary"])
		for {
			p, err := mr.NextPart() // decodes quoted-printable
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			part, err := io.ReadAll(p)
			if err != nil {
				t.Fatal(err)
			}
			if p.Header.Get("Content-Transfer-Encoding") == "base64" {
				if part, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(part), "\r\n", "")); err != nil {
					t.Fatal(err)
				}
			}
			text += strings.ReplaceAll(string(part), "\r\n", "\n") + "\n"
		}
		out = append(out, text)
	}
	return out
}
