package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/testutil"
)

var loginLimits = LoginLimits{Keep: 4, Retention: 7 * day}

func login(at time.Time, result, protocol, ip string) LoginReport {
	return LoginReport{Time: at, Result: result, Protocol: protocol, IP: ip}
}

// TestRecordLogin: a verified login of a governed account starts its
// list; failed logins are added only to an account that has one (or a
// record in aupd); alike logins fold into one entry that moves to the
// head; the list keeps Keep entries and expires Retention after its last
// write.
func TestRecordLogin(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	s := New(rdb, prefix)
	ctx := context.Background()
	alice := "alice@example.com"
	key := s.key(alice, sufLogins)
	record := func(r LoginReport, mayCreate bool) bool {
		t.Helper()
		ok, err := s.RecordLogin(ctx, alice, r, mayCreate, loginLimits)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// A guess at the password of a name with nothing: not recorded, even
	// when the caller would allow creating (a failure never creates).
	if record(login(t0, LoginFailed, "imap", "203.0.113.9"), true) || record(login(t0, LoginOK, "imap", "192.0.2.1"), false) {
		t.Fatal("recorded a login of an account with no list and no record")
	}
	if rdb.Exists(ctx, key).Val() != 0 {
		t.Fatal("a key was created")
	}
	// A verified login starts the list; failures follow.
	if !record(login(t0, LoginOK, "IMAP", "::ffff:192.0.2.1"), true) {
		t.Fatal("the verified login was not recorded")
	}
	for i := range 3 {
		if !record(login(t0.Add(time.Duration(i+1)*time.Minute), LoginFailed, "imap", "203.0.113.9"), false) {
			t.Fatal("the failed login of an account with a list was not recorded")
		}
	}
	record(login(t0.Add(10*time.Minute), LoginRefused, "pop3", "203.0.113.9"), true)
	record(login(t0.Add(11*time.Minute), LoginOK, "imap", "192.0.2.1"), true) // alike the first: moves up
	got, err := s.Logins(ctx, alice, t0.Add(-day))
	if err != nil {
		t.Fatal(err)
	}
	want := []Login{
		{Result: LoginOK, Protocol: "imap", IP: "192.0.2.1", Count: 2, First: t0, Last: t0.Add(11 * time.Minute)},
		{Result: LoginRefused, Protocol: "pop3", IP: "203.0.113.9", Count: 1, First: t0.Add(10 * time.Minute), Last: t0.Add(10 * time.Minute)},
		{Result: LoginFailed, Protocol: "imap", IP: "203.0.113.9", Count: 3, First: t0.Add(time.Minute), Last: t0.Add(3 * time.Minute)},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("logins\n%v\nwant\n%v", got, want)
	}
	// Keep bounds the entries: the least recent go.
	for i, ip := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
		record(login(t0.Add(time.Duration(20+i)*time.Minute), LoginFailed, "submission", ip), false)
	}
	got, _ = s.Logins(ctx, alice, t0.Add(-day))
	if len(got) != loginLimits.Keep || got[0].IP != "198.51.100.3" || got[3].Result != LoginOK {
		t.Fatalf("kept %v", got)
	}
	if n := rdb.LLen(ctx, key).Val(); n != int64(loginLimits.Keep) {
		t.Fatalf("the list holds %d entries, want %d", n, loginLimits.Keep)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 7*day-time.Minute || ttl > 7*day {
		t.Fatalf("TTL %s, want the retention", ttl)
	}
	if cluster.SlotOf(key) != cluster.SlotOf(s.key(alice, sufState)) || key != prefix+":{alice@example.com}:li" {
		t.Fatalf("key %s is not on the account's slot", key)
	}
	// Eight days later the old entries are gone from the next write, and
	// from what is read before it.
	later := t0.Add(8 * day)
	if got, _ := s.Logins(ctx, alice, later.Add(-7*day)); len(got) != 0 {
		t.Fatalf("read entries past the retention: %v", got)
	}
	record(login(later, LoginFailed, "imap", "203.0.113.50"), false)
	if n := rdb.LLen(ctx, key).Val(); n != 1 {
		t.Fatalf("the list holds %d entries after the retention, want 1", n)
	}
	// Odd input is stored tamely: a protocol that is no name, an address
	// that is none.
	record(login(later, LoginOK, "IMAP <script>", "not an address"), true)
	got, _ = s.Logins(ctx, alice, later.Add(-day))
	if got[0].Protocol != "other" || got[0].IP != "" {
		t.Fatalf("odd login stored as %+v", got[0])
	}
}

// TestRecordLoginAccountWithRecord: an account aupd holds a record of
// gets its failed logins recorded without an earlier verified one; the
// list and the sender tally go with the account when it is deleted.
func TestRecordLoginAccountWithRecord(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	s := New(rdb, prefix, WithClock(func() time.Time { return t0 }))
	ctx := context.Background()
	bob := "bob@example.com"
	if _, err := s.SetAccount(ctx, bob, "mailbox", "acme", Actor{Name: "test", Reason: "admin"}); err != nil {
		t.Fatal(err)
	}
	ok, err := s.RecordLogin(ctx, bob, login(t0, LoginFailed, "imap", "203.0.113.9"), false, loginLimits)
	if err != nil || !ok {
		t.Fatalf("failed login of an account with a record: %v %v", ok, err)
	}
	st := s.NewSenders(0)
	st.Add(bob, "203.0.113.9", "", t0)
	if err := st.Flush(ctx, keep, t0); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, s.key(bob, sufLogins), s.key(bob, sufSenders)).Val(); n != 2 {
		t.Fatalf("%d of the two keys exist", n)
	}
	if _, err := s.Delete(ctx, bob, Actor{Name: "test", Reason: "admin"}); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, s.key(bob, sufLogins), s.key(bob, sufSenders)).Val(); n != 0 {
		t.Fatalf("%d of the recent logins and the sender tally outlived the account", n)
	}
}
