package notifier

import (
	"strings"
	"testing"
	"time"
)

// TestNoticeWording: an account without a company gets no "(your
// company)" in the subject, the default provider name reads right
// mid-sentence and in the signature, the API call is spelled out in full
// without api_url, and a desk link replaces the API call.
func TestNoticeWording(t *testing.T) {
	at := time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		company    string
		provider   string
		apiURL     string
		desk       string
		want, lack []string
	}{
		{
			name: "no company, defaults", provider: Defaults().ProviderName,
			want: []string{"automated notice from your mail provider to the abuse contact", "\nYour mail provider\n",
				"curl -X POST 'https://<aupd server>/api/v1/accounts/bob@nowhere.test/reinstate'", "aupctl reinstate bob@nowhere.test"},
			lack: []string{"(your company)", "from Your mail provider", "\nPOST /api"},
		},
		{
			name: "company, desk link", company: "example", provider: "Provider Mail", apiURL: "https://aupd.provider.test",
			desk: "https://aupd.provider.test/desk/l/abc.def",
			want: []string{"(Example Ltd)", "    https://aupd.provider.test/desk/l/abc.def\n", "It works until\n2026-11-28 10:15:02 UTC", "reinstates this suspension once"},
			lack: []string{"curl -X POST", "Bearer"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(25)
			cfg.ProviderName, cfg.APIURL = tc.provider, tc.apiURL
			r, err := newRenderer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			account := "bob@nowhere.test"
			if tc.company != "" {
				account = "alice@example.com"
			}
			ev := testSuspension(account, tc.company, at, nil)
			n := notice{event: ev, company: Company{Name: "Example Ltd"}, companyOK: tc.company != "", now: at.Add(2 * time.Second), messageID: "m@provider.test"}
			if tc.desk != "" {
				n.deskURL, n.deskUntil = tc.desk, n.now.Add(7*24*time.Hour)
			}
			rn, err := r.render(n)
			if err != nil {
				t.Fatal(err)
			}
			p, err := parseNotice(rn.message)
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(p.header.Get("Subject")+"\n"+p.body+"\n"+string(rn.evidence), "\r\n", "\n")
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("notice lacks %q:\n%s", w, text)
				}
			}
			for _, l := range tc.lack {
				if strings.Contains(text, l) {
					t.Errorf("notice has %q:\n%s", l, text)
				}
			}
		})
	}
}
