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

func TestDigestToEachAbuseContact(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	ns := testutil.NATSServer(t, "")
	js, _ := jetstream.New(testutil.NATS(t, ns.ClientURL()))
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
	job := Digest(DigestOptions{
		Store: st, Companies: func() []companies.Company { return cos }, Sender: ntf,
		JetStream: js, AccountStream: "AUP_ACCOUNTS", Threshold: func(companies.Company) int { return 50 },
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
		"Accounts near their threshold: not available", "Abuse desk: https://desk.provider.example/",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("digest lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "\r\nBcc:") || strings.Contains(msg, "gus@") {
		t.Errorf("digest has an injected header or another company's account:\n%s", msg)
	}
}
