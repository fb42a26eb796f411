package desk

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// TestReceivedFrom reads the client address of a Received field as the
// MTAs write it, preferring the connection's address to the HELO name.
func TestReceivedFrom(t *testing.T) {
	tests := []struct{ field, want string }{
		{"from client.example.net (client.example.net [203.0.113.9]) by mx.example.com (Postfix) with ESMTPSA id 4QX; Tue, 1 Dec 2026 08:00:00 +0000", "203.0.113.9"},
		{"from [192.168.1.20] (unknown [203.0.113.9])\tby smtp.example.com (Postfix) with ESMTPSA", "203.0.113.9"},
		{"from laptop (dsl.example.net [IPv6:2001:DB8::7]) by mx.example.com", "2001:db8::7"},
		{"from host.example.net ([203.0.113.9]:52144 helo=laptop) by mx.example.com with esmtpsa (Exim 4.96)", "203.0.113.9"},
		{"from [198.51.100.4] (helo=laptop) by mx.example.com with esmtp (Exim 4.96)", "198.51.100.4"},
		{"from EXCH01.corp.example (10.1.2.3) by EXCH02.corp.example (10.1.2.4) with Microsoft SMTP Server", "10.1.2.3"},
		{"from localhost (localhost [127.0.0.1]) by mx.example.com (Postfix) with ESMTP id 1", "127.0.0.1"},
		{"FROM x (y [::ffff:192.0.2.1]) BY z", "192.0.2.1"},
		// The address after "by" is the server's, not the client's.
		{"from client.example.net by mx.example.com ([192.0.2.250]) with ESMTP", ""},
		{"by mx.example.com (Postfix, from userid 1000) id 5; Tue, 1 Dec 2026", ""},
		{"from client.example.net (HELO <script>alert(1)</script>) by x", ""},
		{"from [999.1.1.1] (unknown [not an address]) by x", ""},
		{"from a (b [203.0.113.9", ""},
		{"", ""},
	}
	for _, tt := range tests {
		ip, ok := receivedFrom(tt.field)
		got := ""
		if ok {
			got = ip.String()
		}
		if got != tt.want {
			t.Errorf("%q: %q, want %q", tt.field, got, tt.want)
		}
	}
}

// TestReceivedHops: the client addresses of a message's Received fields,
// earliest first, with private and loopback ones marked.
func TestReceivedHops(t *testing.T) {
	fields, body := splitMessage("Received: from relay.example.com (relay.example.com [192.0.2.25])\n" +
		"\tby mx.example.net (Postfix) with ESMTPS id 9\n" +
		"Received: from localhost (localhost [127.0.0.1]) by relay.example.com (amavis)\n" +
		"Received: from [10.0.0.5] (host.isp.example\n  [203.0.113.9]) by relay.example.com (Postfix) with ESMTPSA id 4\n" +
		"Subject: hello\n\nbody line\n")
	if body != "body line\n" || len(fields) != 4 {
		t.Fatalf("fields %+v body %q", fields, body)
	}
	hops := receivedHops(fields)
	want := []hop{{IP: "203.0.113.9", First: true}, {IP: "127.0.0.1", Kind: "loopback"}, {IP: "192.0.2.25"}}
	if len(hops) != len(want) {
		t.Fatalf("hops %+v", hops)
	}
	for i := range want {
		if hops[i] != want[i] {
			t.Errorf("hop %d: %+v, want %+v", i, hops[i], want[i])
		}
	}
	if k := addrKind(mustAddr("100.64.1.1")); k != "shared" {
		t.Errorf("CGNAT kind %q", k)
	}
}

// TestSplitMessage: folded fields are unfolded, a line that is no field
// ends the header, and encoded words are decoded beside the raw value.
func TestSplitMessage(t *testing.T) {
	fields, body := splitMessage("Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\nFrom: =?ISO-8859-1?Q?J=F6rg?= <j@example.com>\n" +
		"To: a@example.net,\n b@example.net\nthis is not a field\nmore\n")
	if len(fields) != 3 || body != "this is not a field\nmore\n" {
		t.Fatalf("fields %+v body %q", fields, body)
	}
	if f := fields[0]; f.Decoded != "Grüße aus Köln" || !strings.HasPrefix(f.Value, "=?UTF-8?B?") {
		t.Errorf("subject %+v", f)
	}
	if f := fields[1]; f.Decoded != "Jörg <j@example.com>" {
		t.Errorf("from %+v", f)
	}
	if f := fields[2]; f.Value != "a@example.net, b@example.net" || f.Decoded != "" {
		t.Errorf("to %+v", f)
	}
}

// TestDecodeWords decodes the common charsets, leaves what it cannot
// decode as it is, and keeps control and bidi characters out.
func TestDecodeWords(t *testing.T) {
	tests := []struct{ in, want string }{
		{"=?UTF-8?B?R3LDvMOfZQ==?=", "Grüße"},
		{"=?utf-8?q?caf=C3=A9_au_lait?=", "café au lait"},
		{"=?windows-1252?Q?=80_100_=96_=93sale=94?=", "€ 100 – “sale”"},
		{"=?ISO-8859-15?Q?=A4uro?=", "€uro"},
		{"=?iso-8859-1?q?=E9t=E9?=", "été"},
		{"=?x-unknown?Q?abc?=", "=?x-unknown?Q?abc?="},
		{"=?UTF-8?B?not base64!?=", "=?UTF-8?B?not base64!?="},
		{"plain subject", "plain subject"},
		{"=?UTF-8?Q?a=0D=0ABcc:_x?=", "a\uFFFD\uFFFDBcc: x"},
		{"=?UTF-8?Q?left=E2=80=AEright?=", "left\uFFFDright"},
		{"Re: =?UTF-8?B?w6k=?= and =?UTF-8?B?w6A=?=", "Re: é and à"},
	}
	for _, tt := range tests {
		if got := decodeWords(tt.in); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestBadges: the badges say what is in force, sending first.
func TestBadges(t *testing.T) {
	sus := func(svcs ...rules.Service) map[rules.Service]store.Suspension {
		m := map[rules.Service]store.Suspension{}
		for _, s := range svcs {
			m[s] = store.Suspension{}
		}
		return m
	}
	tests := []struct {
		status rules.Status
		sus    map[rules.Service]store.Suspension
		want   string
	}{
		{rules.StatusActive, nil, "active"},
		{rules.StatusActive, sus(rules.ServiceSend, rules.ServiceWebmailSend), "sending suspended"},
		{rules.StatusActive, sus(rules.ServiceSend), "sending over SMTP suspended"},
		{rules.StatusLocked, sus(rules.ServiceSend, rules.ServiceWebmailSend, rules.ServiceIMAP), "locked|sending suspended|IMAP suspended"},
		{rules.StatusLockout, nil, "locked out (failed logins)"},
		{rules.StatusActive, sus(rules.ServiceReceive, rules.ServiceIMAP, rules.ServicePOP3, rules.ServiceWebmail), "receiving suspended|reading mail suspended"},
		{rules.StatusClosed, nil, "closed"},
	}
	for _, tt := range tests {
		var got []string
		for _, b := range badges(tt.status, tt.sus) {
			got = append(got, b.Text)
			if b.Text != "active" && b.Class == "status-active" {
				t.Errorf("%s: %q is green", tt.want, b.Text)
			}
		}
		if strings.Join(got, "|") != tt.want {
			t.Errorf("%s %v: %q, want %q", tt.status, tt.sus, got, tt.want)
		}
	}
}

// TestReasonWords: every reason code aupd writes has words.
func TestReasonWords(t *testing.T) {
	for _, code := range []string{rules.ReasonAUPViolation, rules.ReasonAdmin, rules.ReasonLockout, store.ReasonLockoutEnded, "abuse_contact"} {
		if reasonText(code) == "" || suspensionReason(code) == "" {
			t.Errorf("no words for %s", code)
		}
	}
	if suspensionReason(rules.ReasonAdmin) != "suspended by the provider" || reasonText(rules.ReasonAUPViolation) != "too many spam messages" {
		t.Error("wording changed")
	}
	if reasonText("billing_hold") != "" {
		t.Error("an unknown code got words")
	}
}

// FuzzMessage: any evidence text, message text or Received field is read
// without panicking, and what comes out names only valid addresses.
func FuzzMessage(f *testing.F) {
	f.Add("Received: from a (b [203.0.113.9]) by c\nSubject: =?UTF-8?B?w6k=?=\n\nbody")
	f.Add("Received: from [1.2.3.4]:25 (x [IPv6:::1]) by y\n\tz\n")
	f.Fuzz(func(t *testing.T, s string) {
		fields, _ := splitMessage(s)
		for _, h := range receivedHops(fields) {
			if _, err := parseAddrString(h.IP); err != nil {
				t.Fatalf("hop %q is no address", h.IP)
			}
		}
		_ = parseEvidence(s)
		_ = decodeWords(s)
	})
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func parseAddrString(s string) (netip.Addr, error) { return netip.ParseAddr(s) }
