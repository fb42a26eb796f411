package store

import (
	"context"
	_ "embed"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/api/apitypes"
)

//go:embed logins.lua
var loginsLua string

var loginsScript = redis.NewScript(loginsLua)

// The results of a login.
const (
	LoginOK      = "ok"      // the password was right
	LoginFailed  = "failed"  // it was wrong
	LoginRefused = "refused" // it was right, and aupd's policy refused the login
)

var loginCodes = map[string]string{LoginOK: "o", LoginFailed: "f", LoginRefused: "r"}

// Login is one entry of an account's recent logins.
type Login = apitypes.Login

// LoginReport is one login to record.
type LoginReport struct {
	Time     time.Time
	Result   string // LoginOK, LoginFailed or LoginRefused
	Protocol string // Dovecot's service name: imap, pop3, submission, ...
	IP       string // the client's address; kept only when it is one
}

// LoginLimits bound an account's recent logins.
type LoginLimits struct {
	Keep      int           // entries kept
	Retention time.Duration // how long an entry stays after its last login
}

// RecordLogin adds one login to an account's recent logins in one script
// call, and reports whether it did. mayCreate allows starting the list:
// pass it only for a login whose password was verified (ok, refused) of
// an account aupd governs. Otherwise the login is added only to an
// account that has a list already or a record in aupd, so that guesses at
// names that are not mailboxes fill no keys.
func (s *Store) RecordLogin(ctx context.Context, account string, r LoginReport, mayCreate bool, lim LoginLimits) (bool, error) {
	code, ok := loginCodes[r.Result]
	if !ok || lim.Keep <= 0 || lim.Retention <= 0 {
		return false, nil
	}
	ip := "-"
	if a, err := netip.ParseAddr(r.IP); err == nil {
		ip = a.Unmap().WithZone("").String()
	}
	mode := "a"
	if mayCreate && r.Result != LoginFailed {
		mode = "c"
	}
	n, err := loginsScript.Run(ctx, s.rdb, []string{s.key(account, sufLogins), s.key(account, sufState)},
		ms(r.Time), lim.Retention.Milliseconds(), lim.Keep, mode, code, loginProtocol(r.Protocol), ip).Int()
	if err != nil {
		return false, wrap("record login", err)
	}
	return n == 1, nil
}

// loginProtocol is a protocol name as stored: lower case letters, digits
// and dashes, at most 16; "other" for anything else, "-" for none.
func loginProtocol(p string) string {
	p = strings.ToLower(strings.TrimSpace(p))
	if p == "" {
		return "-"
	}
	if len(p) > 16 {
		return "other"
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "other"
		}
	}
	return p
}

// Logins returns an account's recent logins whose last login is after
// since, the most recent first.
func (s *Store) Logins(ctx context.Context, account string, since time.Time) ([]Login, error) {
	raw, err := s.rdb.LRange(ctx, s.key(account, sufLogins), 0, -1).Result()
	if err != nil {
		return nil, wrap("read recent logins", err)
	}
	results := map[string]string{"o": LoginOK, "f": LoginFailed, "r": LoginRefused}
	out := make([]Login, 0, len(raw))
	for _, e := range raw {
		f := strings.Fields(e)
		if len(f) != 6 {
			continue
		}
		last, err1 := strconv.ParseInt(f[0], 10, 64)
		first, err2 := strconv.ParseInt(f[1], 10, 64)
		n, err3 := strconv.Atoi(f[2])
		res, ok := results[f[3]]
		if err1 != nil || err2 != nil || err3 != nil || !ok || last <= since.Unix() {
			continue
		}
		l := Login{Result: res, Protocol: f[4], IP: f[5], Count: n, First: time.Unix(first, 0).UTC(), Last: time.Unix(last, 0).UTC()}
		if l.Protocol == "-" {
			l.Protocol = ""
		}
		if l.IP == "-" {
			l.IP = ""
		}
		out = append(out, l)
	}
	return out, nil
}
