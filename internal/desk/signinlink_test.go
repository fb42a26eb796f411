package desk

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestSignInLinkRoundTrip: a sign-in link carries its address, company,
// page and expiry; it is refused when expired, changed, signed with
// another key, or given where a notice link is expected, and a notice
// link is refused as a sign-in link.
func TestSignInLinkRoundTrip(t *testing.T) {
	l := testLinks()
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	tok, exp := l.SignIn("a|b@example.com", "acme", "/desk/accounts/x@example.com?tab=1", now)
	if !exp.Equal(now.Add(15 * time.Minute)) {
		t.Errorf("expires %v", exp)
	}
	if u := l.SignInURL(tok); u != "https://aupd.example/desk/sign-in/link/"+tok {
		t.Errorf("URL %q", u)
	}
	lk, err := l.ParseSignIn(tok, now.Add(time.Minute))
	if err != nil || lk.Address != "a|b@example.com" || lk.Company != "acme" || lk.Next != "/desk/accounts/x@example.com?tab=1" ||
		!lk.Expires.Equal(exp) || !lk.Issued.Equal(now) || lk.nonce == "" {
		t.Fatalf("parse: %+v %v", lk, err)
	}
	if again, _ := l.SignIn("a|b@example.com", "acme", "", now); again == tok {
		t.Error("two links for the same address are the same: no nonce")
	}
	if _, err := l.ParseSignIn(tok, exp); !errors.Is(err, ErrLinkExpired) {
		t.Errorf("at expiry: %v", err)
	}
	other := NewLinks(Config{PublicURL: "https://aupd.example/desk", LinkKey: Secret(strings.Repeat("j", 40))})
	if _, err := other.ParseSignIn(tok, now); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("another key: %v", err)
	}
	if l.fingerprint() == other.fingerprint() || l.fingerprint() == "" {
		t.Error("key fingerprints do not tell keys apart")
	}
	payload, sig, _ := strings.Cut(tok, ".")
	for _, bad := range []string{payload + ".x" + sig[1:], "x" + tok, payload, "", strings.Repeat("a", 3000)} {
		if _, err := l.ParseSignIn(bad, now); !errors.Is(err, ErrLinkInvalid) {
			t.Errorf("ParseSignIn(%.40q): %v", bad, err)
		}
	}
	// The two kinds of link never stand in for each other.
	if _, err := l.Parse(tok, now); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("a sign-in link as a notice link: %v", err)
	}
	notice, _ := l.Sign("alice@example.com", "s1", now)
	if _, err := l.ParseSignIn(notice, now); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("a notice link as a sign-in link: %v", err)
	}
	if l.signInForm(tok) == l.FormToken(tok) {
		t.Error("the sign-in form's token is the notice form's")
	}
	var off *Links
	if _, err := off.ParseSignIn(tok, now); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("no links: %v", err)
	}
}

// FuzzSignInLinkParse: no token makes ParseSignIn panic; it accepts only
// a token whose MAC is this key's for the sign-in purpose, and whatever
// it accepts names a page safeNext allows. (The seed is signed in each
// fuzzing process anew, with a nonce of its own.)
func FuzzSignInLinkParse(f *testing.F) {
	l := testLinks()
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	tok, _ := l.SignIn("alice@example.com", "acme", "/desk/search?q=a", now)
	f.Add(tok)
	f.Add("")
	f.Add(".")
	f.Fuzz(func(t *testing.T, s string) {
		lk, err := l.ParseSignIn(s, now)
		if err != nil {
			return
		}
		payload, sig, _ := strings.Cut(s, ".")
		if sig != l.mac(signInPurpose, payload) || safeNext(lk.Next) != lk.Next || lk.Address == "" || lk.Company == "" {
			t.Fatalf("accepted %q: %+v", s, lk)
		}
	})
}

// TestSafeNext: only a desk page of this site is a place to land after
// sign-in; everything else lands on the overview.
func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/desk/":                                 "/desk/",
		"/desk/accounts/alice@example.com":       "/desk/accounts/alice@example.com",
		"/desk/search?q=alice&x=%2F%2Fevil.test": "/desk/search?q=alice&x=%2F%2Fevil.test",
		"/desk/sessions":                         "/desk/sessions",
		"":                                       "/desk/",
		"/":                                      "/desk/",
		"/desk":                                  "/desk/",
		"https://evil.test/desk/":                "/desk/",
		"//evil.test/desk/":                      "/desk/",
		"/desk//evil.test":                       "/desk/",
		"/desk/\\evil.test":                      "/desk/",
		"/\\evil.test/desk/":                     "/desk/",
		"/desk/\t/evil.test":                     "/desk/",
		"/desk/\n":                               "/desk/",
		"/desk/../metrics":                       "/desk/",
		"/desk/..":                               "/desk/",
		"/desk/a|b":                              "/desk/",
		"/api/v1/accounts":                       "/desk/",
		"javascript:alert(1)":                    "/desk/",
		"/desk/sign-in?next=/desk/x":             "/desk/",
		"/desk/sign-in/link/abc":                 "/desk/",
		"/desk/sign-out":                         "/desk/",
		"/desk/l/abc":                            "/desk/",
		"/desk/" + strings.Repeat("a", 1000):     "/desk/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLogPath: a link's secret part never reaches the log.
func TestLogPath(t *testing.T) {
	for in, want := range map[string]string{
		"/desk/sign-in/link/abc.def": "/desk/sign-in/link/<link>",
		"/desk/l/abc.def/reinstate":  "/desk/l/<link>/reinstate",
		"/desk/accounts/a@b.c":       "/desk/accounts/a@b.c",
		"/desk/sign-in/link":         "/desk/sign-in/link",
	} {
		r := httptest.NewRequest("GET", in, nil)
		if got := logPath(r); got != want {
			t.Errorf("logPath(%s) = %s, want %s", in, got, want)
		}
	}
}
