package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzSuspendBody sends arbitrary bodies to a mutating endpoint: the
// answer is 200 with an account or a 4xx JSON error, never a 5xx.
func FuzzSuspendBody(f *testing.F) {
	e := newEnv(f)
	for _, seed := range []string{
		`{"services":["send"],"reason":"x"}`,
		`{"services":["send","imap"],"reason":"spam","code":"aup_violation"}`,
		`{"services":[],"reason":"x"}`,
		`{"services":["send"]}`,
		`{"services":"send","reason":1}`,
		`{"services":["send"],"reason":"x","extra":1}`,
		`{"services":["send"],"reason":"x"}{}`,
		`[]`, `null`, `""`, `{`, "\x00", `{"reason":"\ud800"}`,
		`{"services":[null],"reason":"x"}`,
		`{"services":["send"],"reason":"x","code":"` + strings.Repeat("a", 40) + `"}`,
	} {
		f.Add([]byte(seed))
	}
	url := e.srv.URL + "/api/v1/accounts/fuzz@acme.example/suspend"
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := http.NewRequest("POST", url, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokAdmin)
		req.Header.Set("Content-Type", "application/json")
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(res.Body)
		res.Body.Close()
		switch {
		case res.StatusCode == 200:
			var cr ChangeResponse
			if err := json.Unmarshal(data, &cr); err != nil || cr.Account == nil {
				t.Fatalf("200 without an account: %s", data)
			}
		case res.StatusCode >= 400 && res.StatusCode < 500:
			var er struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(data, &er); err != nil || er.Error.Code == "" {
				t.Fatalf("%d without a JSON error: %s", res.StatusCode, data)
			}
		default:
			t.Fatalf("body %q: status %d %s", body, res.StatusCode, data)
		}
	})
}
