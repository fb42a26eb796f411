package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/testutil"
)

const keep = day + 5*time.Minute

// TestSendersTally: a Senders gathers the senders of counted messages in
// memory, and a flush writes every account's in one round trip, one
// script call for all of them, merging with what was written before:
// counts add up, first and last seen widen, logins are kept in lower case.
func TestSendersTally(t *testing.T) {
	rdb := testutil.PrivateRedis(t)
	s := New(rdb, "snd")
	ctx := context.Background()
	st := s.NewSenders(0)
	alice, bob := "alice@example.com", "bob@example.com"
	st.Add(alice, "203.0.113.9", "Alice@Example.com", t0.Add(-3*time.Hour))
	st.Add(alice, "203.0.113.9", "alice@example.com", t0.Add(-time.Hour))
	st.Add(alice, "198.51.100.7", "", t0.Add(-2*time.Hour))
	st.Add(alice, "", "", t0) // neither: nothing
	st.Add(bob, "", "bob", t0.Add(-time.Minute))
	if n := st.Len(); n != 3 {
		t.Fatalf("%d entries held, want 3", n)
	}
	if err := sendersScript.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	before := commandCalls(t, rdb)
	calls := evalCalls(t, rdb)
	if err := st.Flush(ctx, keep, t0); err != nil {
		t.Fatal(err)
	}
	if n := evalCalls(t, rdb) - calls; n != 1 {
		t.Fatalf("the flush made %d script calls, want 1 for both accounts", n)
	}
	if d, _ := diff(commandCalls(t, rdb), before); d["hgetall"] != 2 || d["hset"] != 2 || d["pexpire"] != 2 {
		t.Fatalf("the flush ran %v, want per account one HGETALL, HSET and PEXPIRE", d)
	}
	if st.Len() != 0 || st.Dropped() != 0 {
		t.Fatalf("after the flush: %d held, %d dropped", st.Len(), st.Dropped())
	}
	// A second flush merges.
	st.Add(alice, "203.0.113.9", "ALICE@example.com", t0.Add(-4*time.Hour))
	st.Add(alice, "203.0.113.9", "alice@example.com", t0.Add(-30*time.Minute))
	if err := st.Flush(ctx, keep, t0); err != nil {
		t.Fatal(err)
	}
	got, err := s.Senders(ctx, alice, t0.Add(-day))
	if err != nil {
		t.Fatal(err)
	}
	want := []Sender{
		{IP: "203.0.113.9", Login: "alice@example.com", Count: 4, First: t0.Add(-4 * time.Hour), Last: t0.Add(-30 * time.Minute)},
		{IP: "198.51.100.7", Count: 1, First: t0.Add(-2 * time.Hour), Last: t0.Add(-2 * time.Hour)},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("alice's senders\n%v\nwant\n%v", got, want)
	}
	if got, _ := s.Senders(ctx, bob, t0.Add(-day)); len(got) != 1 || got[0].Login != "bob" || got[0].IP != "" || got[0].Count != 1 {
		t.Fatalf("bob's senders %v", got)
	}
	// Read since a later time (a reinstatement): only what was seen after.
	if got, _ := s.Senders(ctx, alice, t0.Add(-time.Hour)); len(got) != 1 || got[0].IP != "203.0.113.9" {
		t.Fatalf("alice's senders since an hour ago: %v", got)
	}

	// The key: the account's hash tag, on the slot of its other keys, and
	// expiring keep after its most recent sender.
	key := "snd:{alice@example.com}:f"
	if s.key(alice, sufSenders) != key || cluster.SlotOf(key) != cluster.SlotOf(s.key(alice, sufState)) || cluster.SlotOf(key) != cluster.SlotOf(s.key(alice, sufWindow)) {
		t.Fatalf("key %s is not on the account's slot", s.key(alice, sufSenders))
	}
	ttl := rdb.PTTL(ctx, key).Val()
	if want := keep - 30*time.Minute; ttl <= want-time.Minute || ttl > want {
		t.Fatalf("TTL %s, want about %s (keep after the newest sender)", ttl, want)
	}
}

// evalCalls counts the script calls Redis ran (EVALSHA and EVAL).
func evalCalls(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if ok && (name == "cmdstat_evalsha" || name == "cmdstat_eval") {
			c, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			n += c
		}
	}
	return n
}

// TestSendersBound: an account keeps at most MaxSenders senders, the most
// recently seen; a flush with more for one account sends only those, and
// counts the messages of the others as dropped.
func TestSendersBound(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	s := New(rdb, prefix)
	ctx := context.Background()
	st := s.NewSenders(0)
	carol := "carol@example.com"
	for i := range MaxSenders + 4 {
		st.Add(carol, fmt.Sprintf("192.0.2.%d", i+1), "", t0.Add(time.Duration(i-40)*time.Minute))
	}
	if err := st.Flush(ctx, keep, t0); err != nil {
		t.Fatal(err)
	}
	if n := st.Dropped(); n != 4 {
		t.Fatalf("dropped %d, want the 4 least recent", n)
	}
	got, err := s.Senders(ctx, carol, t0.Add(-day))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != MaxSenders || got[0].IP != "192.0.2.20" || got[MaxSenders-1].IP != "192.0.2.5" {
		t.Fatalf("kept %d senders, newest %v oldest %v", len(got), got[0], got[len(got)-1])
	}
	// New senders push the least recent ones out in Redis too; an older
	// one than all kept is not added.
	st.Add(carol, "198.51.100.1", "", t0)
	st.Add(carol, "198.51.100.2", "", t0.Add(-time.Hour))
	if err := st.Flush(ctx, keep, t0); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Senders(ctx, carol, t0.Add(-day))
	if len(got) != MaxSenders || got[0].IP != "198.51.100.1" || got[MaxSenders-1].IP != "192.0.2.6" {
		t.Fatalf("kept %d senders, newest %v oldest %v", len(got), got[0], got[len(got)-1])
	}
	if n := rdb.HLen(ctx, s.key(carol, sufSenders)).Val(); n != MaxSenders {
		t.Fatalf("the hash holds %d fields, want %d", n, MaxSenders)
	}
	// The buffer's own bound: beyond it, new entries are dropped.
	small := s.NewSenders(2)
	small.Add(carol, "192.0.2.1", "", t0)
	small.Add(carol, "192.0.2.2", "", t0)
	small.Add(carol, "192.0.2.3", "", t0)
	small.Add(carol, "192.0.2.1", "", t0) // held: added to
	if small.Len() != 2 || small.Dropped() != 1 {
		t.Fatalf("bounded buffer: %d held, want 2 and 1 dropped", small.Len())
	}
}

// TestSendersExpire: a sender last seen longer than keep ago is not
// written, one already written is dropped by the next write, and the
// whole tally expires keep after its most recent sender.
func TestSendersExpire(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	s := New(rdb, prefix)
	ctx := context.Background()
	st := s.NewSenders(0)
	dave := "dave@example.com"
	key := s.key(dave, sufSenders)
	st.Add(dave, "192.0.2.1", "", t0.Add(-keep-time.Minute)) // too old already
	st.Add(dave, "192.0.2.2", "", t0.Add(-20*time.Hour))
	if err := st.Flush(ctx, keep, t0); err != nil {
		t.Fatal(err)
	}
	if f := rdb.HKeys(ctx, key).Val(); len(f) != 1 || f[0] != "192.0.2.2\t" {
		t.Fatalf("fields %q, want only the recent sender", f)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl > 4*time.Hour+5*time.Minute || ttl < 4*time.Hour {
		t.Fatalf("TTL %s, want about 4h05m", ttl)
	}
	// Five hours later: 192.0.2.2 is past keep, and goes.
	later := t0.Add(5 * time.Hour)
	st.Add(dave, "192.0.2.3", "", later)
	if err := st.Flush(ctx, keep, later); err != nil {
		t.Fatal(err)
	}
	if f := rdb.HKeys(ctx, key).Val(); len(f) != 1 || f[0] != "192.0.2.3\t" {
		t.Fatalf("fields %q, want only the new sender", f)
	}
	// Nothing recent at all: nothing is written, and no key is made.
	st.Add("erin@example.com", "192.0.2.9", "", t0.Add(-2*day))
	if err := st.Flush(ctx, keep, t0); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, s.key("erin@example.com", sufSenders)).Val(); n != 0 {
		t.Fatal("a tally of nothing recent was created")
	}
}

// TestSendersWrongType: an account whose tally key has another type fails
// alone, with a permanent error; its messages are dropped, not retried,
// and the others are written.
func TestSendersWrongType(t *testing.T) {
	rdb, prefix := testutil.Redis(t)
	s := New(rdb, prefix)
	ctx := context.Background()
	rdb.Set(ctx, s.key("frank@example.com", sufSenders), "x", 0)
	st := s.NewSenders(0)
	st.Add("frank@example.com", "192.0.2.1", "", t0)
	st.Add("frank@example.com", "192.0.2.2", "", t0)
	st.Add("grace@example.com", "192.0.2.3", "", t0)
	err := st.Flush(ctx, keep, t0)
	if !IsPermanent(err) {
		t.Fatalf("flush: %v, want a permanent error", err)
	}
	if n := st.Dropped(); n != 2 {
		t.Fatalf("dropped %d, want frank's 2", n)
	}
	if st.Len() != 0 {
		t.Fatal("the failed account's entries are held for another try")
	}
	if got, _ := s.Senders(ctx, "grace@example.com", t0.Add(-day)); len(got) != 1 {
		t.Fatalf("grace's senders %v", got)
	}
	if _, err := s.Senders(ctx, "frank@example.com", t0.Add(-day)); err == nil {
		t.Fatal("read a tally key of the wrong type")
	}
}
