package desk

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// A signed link names one account and one suspension and an expiry:
//
//	<public_url>/l/<payload>.<mac>
//
// payload is base64url("1|<expiry unix>|<suspension id>|<account>") and
// mac base64url of the first 16 bytes of HMAC-SHA256(link_key,
// "aupd desk link\x00" + payload).
// Nothing in it is secret but the MAC; anything changed voids it.

// Errors of Links.Parse.
var (
	ErrLinkInvalid = errors.New("not a valid desk link")
	ErrLinkExpired = errors.New("the desk link has expired")
)

// Links signs and checks desk links.
type Links struct {
	key       []byte
	base      string // public URL without a trailing slash
	ttl       time.Duration
	signInTTL time.Duration
}

// NewLinks returns the signer of cfg; nil when cfg has no public URL.
func NewLinks(cfg Config) *Links {
	if cfg.PublicURL == "" || len(cfg.LinkKey) < MinKeyLength {
		return nil
	}
	l := &Links{key: []byte(cfg.LinkKey), base: strings.TrimRight(cfg.PublicURL, "/"), ttl: cfg.LinkTTL, signInTTL: cfg.SignInLinkTTL}
	if l.signInTTL <= 0 {
		l.signInTTL = Defaults().SignInLinkTTL
	}
	return l
}

// Link is what a valid link says.
type Link struct {
	Account    string
	Suspension string
	Expires    time.Time
	token      string
}

const linkVersion = "1"

// Sign returns the link token of one suspension, valid until now+ttl.
func (l *Links) Sign(account, suspensionID string, now time.Time) (string, time.Time) {
	exp := now.Add(l.ttl).Truncate(time.Second)
	payload := base64.RawURLEncoding.EncodeToString([]byte(linkVersion + "|" + strconv.FormatInt(exp.Unix(), 10) + "|" + suspensionID + "|" + account))
	return payload + "." + l.mac("aupd desk link", payload), exp
}

// URL returns the full signed link of one suspension (notifier.LinkFunc).
func (l *Links) URL(account, suspensionID string, now time.Time) (string, time.Time, bool) {
	if l == nil {
		return "", time.Time{}, false
	}
	tok, exp := l.Sign(account, suspensionID, now)
	return l.base + "/l/" + tok, exp, true
}

func (l *Links) mac(purpose, data string) string {
	m := hmac.New(sha256.New, l.key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(data))
	// 128 bits of the MAC keep the link short and are far beyond guessing.
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// Parse checks a link token: its MAC first, then its expiry.
func (l *Links) Parse(token string, now time.Time) (*Link, error) {
	if l == nil || len(token) > 1024 {
		return nil, ErrLinkInvalid
	}
	payload, sig, ok := strings.Cut(token, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(l.mac("aupd desk link", payload))) {
		return nil, ErrLinkInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, ErrLinkInvalid
	}
	parts := strings.SplitN(string(raw), "|", 4)
	if len(parts) != 4 || parts[0] != linkVersion || parts[2] == "" || parts[3] == "" {
		return nil, ErrLinkInvalid
	}
	unix, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil, ErrLinkInvalid
	}
	lk := &Link{Account: parts[3], Suspension: parts[2], Expires: time.Unix(unix, 0).UTC(), token: token}
	if !now.Before(lk.Expires) {
		return lk, ErrLinkExpired
	}
	return lk, nil
}

// csrf is the form token of a link's page: only a holder of the link
// can compute it.
func (l *Links) csrf(lk *Link) string { return l.FormToken(lk.token) }

// FormToken is the CSRF token of the reinstate form of a link's page,
// for the link token (the last part of its path).
func (l *Links) FormToken(token string) string { return l.mac("aupd desk link form", token) }
