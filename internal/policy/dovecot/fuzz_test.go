package dovecot

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aupd/aupd/internal/policy/lockout"
)

// FuzzDovecotRequest posts arbitrary bodies as allow and report requests.
// The handler must never panic and must always answer JSON with an integer
// status; a 200 answer's status is 0 or -1, and a refusal of a locked-out
// account never carries a message.
func FuzzDovecotRequest(f *testing.F) {
	for _, s := range []string{
		`{"login":"active@example.test","pwhash":"0833","remote":"127.0.0.1","device_id":"","protocol":"imap","session_id":"x","tls":false}`,
		`{"login":"lockedout@example.test","pwhash":"0833","protocol":"pop3"}`,
		`{"login":"locked@example.test","protocol":"smtp","success":false,"policy_reject":false}`,
		`{"login":"active@example.test","protocol":"imap","success":true,"policy_reject":false}`,
		`{"login":"noimap@example.test","user":"noimap@example.test","protocol":"IMAP"}`,
		`{"login":"\u0000@example.test"}`,
		`{"login":5}`,
		`[]`, `null`, ``, `{`, `{"login":"a@example.test"}{}`,
		`{"success":"yes"}`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	e := newEnv(f, Config{}, lockout.Config{Threshold: 1000})
	f.Fuzz(func(t *testing.T, body []byte, allow bool) {
		cmd := "report"
		if allow {
			cmd = "allow"
		}
		r := httptest.NewRequest(http.MethodPost, "/?command="+cmd, bytes.NewReader(body))
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		var resp map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatalf("answer %q is not JSON: %v", w.Body, err)
		}
		st, ok := resp["status"].(float64)
		if !ok || st != float64(int(st)) {
			t.Fatalf("answer %q has no integer status", w.Body)
		}
		switch w.Code {
		case http.StatusOK:
			if st != 0 && st != -1 {
				t.Fatalf("status %v", st)
			}
			if !allow && st != 0 {
				t.Fatalf("report refused: %q", w.Body)
			}
		case http.StatusBadRequest, http.StatusServiceUnavailable:
			if st != 0 {
				t.Fatalf("error answer with status %v", st)
			}
		default:
			t.Fatalf("HTTP %d", w.Code)
		}
		var req Request
		if json.Unmarshal(body, &req) == nil {
			if acct, ok := req.account(); ok && acct == "lockedout@example.test" && allow && w.Code == http.StatusOK {
				if _, has := resp["msg"]; has || st != -1 {
					t.Fatalf("lockout answered %q", w.Body)
				}
			}
		}
	})
}
