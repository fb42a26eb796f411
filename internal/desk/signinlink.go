package desk

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// A sign-in link lets one person (a company's abuse contact or one of its
// desk_contacts) sign in to the desk once, for one company:
//
//	<public_url>/sign-in/link/<payload>.<mac>
//
// payload is base64url("s1|<expiry unix>|<issued unix ms>|<nonce>|<company>|<next>|<address>")
// and mac base64url of the first 16 bytes of HMAC-SHA256(link_key,
// "aupd desk sign-in link\x00" + payload). The purpose string differs from
// the notice link's ("aupd desk link"), so that neither kind of link is
// ever taken for the other, whatever its payload says. The nonce makes
// each link single-use: signing in marks it used. next is the desk page
// to land on (a local path, see safeNext).

// SignInLink is what a valid sign-in link says.
type SignInLink struct {
	Address string
	Company string
	Next    string
	Expires time.Time
	Issued  time.Time
	nonce   string
	token   string
}

const (
	signInVersion     = "s1"
	signInPurpose     = "aupd desk sign-in link"
	signInFormPurpose = "aupd desk sign-in link form"
)

// SignIn returns the token of a sign-in link for addr at company, valid
// until now + sign_in_link_ttl, and that expiry.
func (l *Links) SignIn(addr, company, next string, now time.Time) (string, time.Time) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	exp := now.Add(l.signInTTL).Truncate(time.Second)
	raw := strings.Join([]string{signInVersion, strconv.FormatInt(exp.Unix(), 10), strconv.FormatInt(now.UnixMilli(), 10),
		base64.RawURLEncoding.EncodeToString(b[:]), company, safeNext(next), addr}, "|")
	payload := base64.RawURLEncoding.EncodeToString([]byte(raw))
	return payload + "." + l.mac(signInPurpose, payload), exp
}

// SignInURL is the full sign-in link of a token.
func (l *Links) SignInURL(token string) string { return l.base + "/sign-in/link/" + token }

// ParseSignIn checks a sign-in link token: its MAC first, then its
// expiry. A notice link's token is not valid here.
func (l *Links) ParseSignIn(token string, now time.Time) (*SignInLink, error) {
	if l == nil || len(token) > 2048 {
		return nil, ErrLinkInvalid
	}
	payload, sig, ok := strings.Cut(token, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(l.mac(signInPurpose, payload))) {
		return nil, ErrLinkInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, ErrLinkInvalid
	}
	parts := strings.SplitN(string(raw), "|", 7)
	if len(parts) != 7 || parts[0] != signInVersion || parts[3] == "" || parts[4] == "" || parts[6] == "" {
		return nil, ErrLinkInvalid
	}
	unix, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil, ErrLinkInvalid
	}
	issued, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return nil, ErrLinkInvalid
	}
	lk := &SignInLink{Address: parts[6], Company: parts[4], Next: safeNext(parts[5]), Expires: time.Unix(unix, 0).UTC(),
		Issued: time.UnixMilli(issued).UTC(), nonce: parts[3], token: token}
	if !now.Before(lk.Expires) {
		return lk, ErrLinkExpired
	}
	return lk, nil
}

// signInForm is the CSRF token of a sign-in link's page: only a holder
// of the link can compute it.
func (l *Links) signInForm(token string) string { return l.mac(signInFormPurpose, token) }

// fingerprint identifies the link key without telling anything about it;
// a session made with a sign-in link keeps it, and ends when the key
// changes.
func (l *Links) fingerprint() string {
	if l == nil {
		return ""
	}
	return l.mac("aupd desk key fingerprint", "")
}

// safeNext returns next when it is a desk page of this site, "/desk/"
// otherwise: a path under /desk/, with no scheme, host, "//", backslash,
// control character or "|", and not the sign-in or sign-out pages. It
// keeps the sign-in page from sending anyone elsewhere (an open redirect).
func safeNext(next string) string {
	const home = "/desk/"
	if len(next) > 1000 || !strings.HasPrefix(next, home) || strings.Contains(next, "//") ||
		strings.ContainsAny(next, "\\|") || strings.Contains(next, "/../") || strings.HasSuffix(next, "/..") {
		return home
	}
	for _, r := range next {
		if r < 0x20 || r == 0x7f {
			return home
		}
	}
	if p, _, _ := strings.Cut(next, "?"); strings.HasPrefix(p, "/desk/sign-in") || p == "/desk/sign-out" || strings.HasPrefix(p, "/desk/l/") {
		return home
	}
	return next
}
