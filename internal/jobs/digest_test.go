package jobs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/companies"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/rules"
)

type jsPub struct{ js jetstream.JetStream }

func (p jsPub) PublishAccountEvent(ctx context.Context, ev *events.AccountEvent, data []byte) error {
	m := nats.NewMsg(events.AccountSubjectPrefix + ev.Type)
	m.Data = data
	m.Header.Set(nats.MsgIdHdr, ev.ID)
	_, err := p.js.PublishMsg(ctx, m)
	return err
}

// The digest reads the account stream with an ordered consumer from a
// start time: checked on the in-process server and on Debian's 2.9.10.
func TestDigestToEachAbuseContact(t *testing.T) {
	testutil.BothNATS(t, testDigest)
}

func testDigest(t *testing.T, natsURL string) {
	rdb, prefix := testutil.Redis(t)
	js := testutil.JetStream(t, natsURL)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUP_ACCOUNTS", Subjects: []string{"aup.account.>"}}); err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, prefix)
	pub := jsPub{js}
	by := store.Actor{Name: "desk", Reason: rules.ReasonAdmin, Note: "password changed\r\nBcc: evil@x"}
	do := func(acct string, op func() (*store.Op, error)) {
		t.Helper()
		if _, err := op(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.FlushOutbox(ctx, acct, pub); err != nil {
			t.Fatal(err)
		}
	}
	for acct, company := range map[string]string{"sam@acme.example": "acme", "ria@acme.example": "acme", "gus@globex.example": "globex"} {
		do(acct, func() (*store.Op, error) { return st.SetAccount(ctx, acct, rules.TypeMailbox, company, by) })
	}
	send := []rules.Service{rules.ServiceSend, rules.ServiceWebmailSend}
	do("sam@acme.example", func() (*store.Op, error) { return st.Suspend(ctx, "sam@acme.example", send, by) })
	do("ria@acme.example", func() (*store.Op, error) { return st.Suspend(ctx, "ria@acme.example", send, by) })
	do("ria@acme.example", func() (*store.Op, error) { return st.Reinstate(ctx, "ria@acme.example", send, by) })

	dir := t.TempDir()
	ncfg := notifier.Defaults()
	ncfg.EMLDir, ncfg.From, ncfg.FallbackAbuseContact = dir, "aupd@provider.example", "abuse@provider.example"
	ntf, err := notifier.New(ncfg, notifier.Options{Redis: rdb, KeyPrefix: prefix, Samples: notifier.StreamSamples{}})
	if err != nil {
		t.Fatal(err)
	}
	cos := []companies.Company{
		{ID: "acme", Name: "Acme <Corp>", Domains: []string{"acme.example"}, AbuseContact: "abuse@acme.example"},
		{ID: "globex", Domains: []string{"globex.example"}, AbuseContact: "abuse@globex.example"}, // nothing to report
		{ID: "initech", Domains: []string{"initech.example"}},                                     // no contact
	}
	directory, err := companies.New(rdb, prefix, cos)
	if err != nil {
		t.Fatal(err)
	}
	// nia has 3 counted events of a threshold of 4 (near it), ned 1 (not
	// near); neither has a record of its own.
	now := time.Now()
	for acct, n := range map[string]int{"nia@acme.example": 3, "ned@acme.example": 1} {
		var items []store.Item
		for i := range n {
			items = append(items, store.Item{ID: acct + string(rune('a'+i)), Time: now.Add(-time.Minute), Kind: rules.KindOf(rules.Outbound, rules.Spam), Counting: true})
		}
		if _, err := st.Ingest(ctx, []store.Batch{{Account: acct, Company: "acme", Threshold: 4, Cap: 5, Action: rules.ActionSuspend, Items: items}},
			store.IngestParams{Window: 24 * time.Hour, Now: now, NewID: func() string { return store.NewID(now) }, Near: map[string]int64{acct: now.UnixMilli()}}); err != nil {
			t.Fatal(err)
		}
	}
	job := Digest(DigestOptions{
		Store: st, Companies: func() []companies.Company { return cos }, CompanyOf: directory.ByAccount, Sender: ntf,
		JetStream: js, AccountStream: "AUP_ACCOUNTS", Threshold: func(companies.Company) int { return 4 }, Near: st.NearThreshold,
		Window: 24 * time.Hour, Cap: 500, DeskURL: "https://desk.provider.example/", Max: 10,
	})
	if err := job(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
	if len(files) != 1 {
		t.Fatalf("%d digests written, want 1 (acme): %v", len(files), files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.ReplaceAll(string(b), "=\r\n", "")
	for _, want := range []string{
		"To: <abuse@acme.example>", "X-Aupd-Notice: aup-digest", "Auto-Submitted: auto-generated",
		"Accounts suspended now: 1", "sam@acme.example: send, webmail_send suspended since",
		"Reinstated in the last 24 hours: 1", "ria@acme.example: send, webmail_send at",
		"Accounts near their threshold: 1", "nia@acme.example: 3 of 4 in the window", "Abuse desk: https://desk.provider.example/",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("digest lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "\r\nBcc:") || strings.Contains(msg, "gus@") || strings.Contains(msg, "ned@") {
		t.Errorf("digest has an injected header or another company's account:\n%s", msg)
	}
}
