package campaign

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/consumers"
	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/events"
	"github.com/aupd/aupd/internal/store"
)

// TestPlanIsExactAndRepeatable checks the plan's arithmetic: the events
// add up, the same seed gives the same events, accounts split into
// crossers and others, and duplicates repeat an original's id.
func TestPlanIsExactAndRepeatable(t *testing.T) {
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	p, err := NewPlan(20000, 200, 7, 0.05, 0.01, 0.4, start)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 20000 || p.NOrig+p.NDup+p.NInvalid != 20000 || p.NDup != 1000 || p.NInvalid != 200 {
		t.Fatalf("plan: %d events, %d originals, %d duplicates, %d invalid", p.Len(), p.NOrig, p.NDup, p.NInvalid)
	}
	if p.seq[0] != 'o' {
		t.Fatal("the first event is not an original")
	}
	cross := p.Crossings()
	if cross < 50 || cross > 110 {
		t.Errorf("%d of 200 accounts cross, want about 80", cross)
	}
	if p.Expected[0] != p.Threshold || p.Crosses[0] || p.Expected[1] != p.Threshold+1 || !p.Crosses[1] {
		t.Errorf("edge accounts: %d (crosses %v), %d (crosses %v), threshold %d", p.Expected[0], p.Crosses[0], p.Expected[1], p.Crosses[1], p.Threshold)
	}
	// Count what the originals hold: counting events per account must be
	// what the plan expects.
	got := make([]int, len(p.Accounts))
	idx := map[string]int{}
	for i, a := range p.Accounts {
		idx[a] = i
	}
	ids := map[string]bool{}
	for k := range p.NOrig {
		e := p.Original(k)
		if ids[e.ID] {
			t.Fatalf("original %d repeats id %s", k, e.ID)
		}
		ids[e.ID] = true
		if e.Verdict != "ham" {
			got[idx[e.Account]]++
		}
		if e.Time.After(start) || e.Time.Before(start.Add(-2*time.Hour)) {
			t.Fatalf("event time %s outside the two hours before %s", e.Time, start)
		}
		if _, err := events.ParseVerdict(e.Subject, e.Data, start, 5*time.Minute); err != nil {
			t.Fatalf("original %d is invalid: %v", k, err)
		}
	}
	for i := range got {
		if got[i] != p.Expected[i] || (got[i] > p.Threshold) != p.Crosses[i] || got[i] > p.MaxCount {
			t.Fatalf("%s: %d counting originals, plan says %d (crosses %v)", p.Accounts[i], got[i], p.Expected[i], p.Crosses[i])
		}
	}
	for i := range p.NInvalid {
		subj, data, reason := p.Invalid(i)
		_, err := events.ParseVerdict(subj, data, start, 5*time.Minute)
		if err == nil {
			t.Fatalf("invalid event %d (%s) parses", i, reason)
		}
	}
	q, _ := NewPlan(20000, 200, 7, 0.05, 0.01, 0.4, start)
	for _, k := range []int{0, 1, 999, p.NOrig - 1} {
		if !bytes.Equal(p.Original(k).Data, q.Original(k).Data) {
			t.Fatalf("original %d differs between two plans of the same seed", k)
		}
	}
	if string(p.seq) != string(q.seq) {
		t.Fatal("the order of events differs between two plans of the same seed")
	}
	r, _ := NewPlan(20000, 200, 8, 0.05, 0.01, 0.4, start)
	if bytes.Equal(p.Original(5).Data, r.Original(5).Data) {
		t.Fatal("another seed gives the same events")
	}
}

// TestScheduleIsRepeatable checks that a seed gives one fault schedule.
func TestScheduleIsRepeatable(t *testing.T) {
	c, err := ParseCounts("aupd-kill=2,nats-leader=1,redis-failover=3")
	if err != nil {
		t.Fatal(err)
	}
	d := Durations{AckWait: 5 * time.Second, SMTPOutage: 10 * time.Second}
	a, err := Schedule(3, c, 5*time.Minute, d)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Schedule(3, c, 5*time.Minute, d)
	if len(a) != 7 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("schedules differ or have %d faults:\n%v\n%v", len(a), a, b)
	}
	if other, _ := Schedule(4, c, 5*time.Minute, d); fmt.Sprint(a) == fmt.Sprint(other) {
		t.Fatal("another seed gives the same schedule")
	}
	if _, err := ParseCounts("aupd-kill=x"); err == nil {
		t.Fatal("a bad count parses")
	}
	if _, err := ParseCounts("reboot=1"); err == nil {
		t.Fatal("an unknown kind parses")
	}
}

// TestScheduleEndsBeforePublishing checks that every fault is planned to
// end before publishing does, the sequential ones one after the other,
// that a lost master kept until the end goes last, and that a plan that
// cannot fit is refused, saying so.
func TestScheduleEndsBeforePublishing(t *testing.T) {
	c, err := ParseCounts("aupd-kill=3,aupd-stop=2,nats-kill=1,nats-leader=2,nats-quorum=1,redis-failover=2,redis-shard=1,redis-lost=1")
	if err != nil {
		t.Fatal(err)
	}
	d := Durations{AckWait: 5 * time.Second, SMTPOutage: time.Minute}
	const span = 6 * time.Minute
	for seed := range uint64(50) {
		fs, err := Schedule(seed, c, span, d)
		if err != nil {
			t.Fatal(err)
		}
		var prevEnd time.Duration
		var seq []Fault
		for _, f := range fs {
			if f.At < span/20 || f.At+f.Budget > span {
				t.Fatalf("seed %d: fault %d %s at %s for %s: outside the first twentieth to %s", seed, f.N, f.Kind, f.At, f.Budget, span)
			}
			if f.Kind == SMTPOutage {
				continue
			}
			if f.At < prevEnd {
				t.Fatalf("seed %d: fault %d %s at %s starts before the one before ends (%s)", seed, f.N, f.Kind, f.At, prevEnd)
			}
			prevEnd = f.At + f.Budget
			seq = append(seq, f)
		}
		if last := seq[len(seq)-1]; last.Kind != RedisLost || !last.UntilEnd {
			t.Fatalf("seed %d: the last fault is %s (until end %v), not the lost master kept until the end", seed, last.Kind, last.UntilEnd)
		}
		if len(fs) != 14 {
			t.Fatalf("seed %d: %d faults, want 14", seed, len(fs))
		}
	}
	// The short form fits, whatever its seeded down times.
	s := Short()
	p, err := NewPlan(s.Events, s.Accounts, s.Seed, s.DupShare, s.InvalidShare, s.CrossShare, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(50) {
		if _, err := Schedule(seed, s.Faults, time.Duration(p.Len())*time.Second/time.Duration(s.Rate), Durations{AckWait: 5 * time.Second, SMTPOutage: s.SMTPOutage}); err != nil {
			t.Fatalf("the short form with seed %d: %v", seed, err)
		}
	}
	// Too many faults for the span, an outage longer than the end of the
	// run, two masters kept until the end: refused.
	if _, err := Schedule(1, c, time.Minute, d); err == nil || !strings.Contains(err.Error(), "publishing lasts 1m0s") {
		t.Fatalf("14 faults in a minute: %v", err)
	}
	if _, err := Schedule(1, Counts{}, time.Minute, Durations{SMTPOutage: 50 * time.Second}); err == nil {
		t.Fatal("a 50 s SMTP outage from 40% of a minute is accepted")
	}
	if _, err := Schedule(1, Counts{RedisLost: 2}, time.Hour, Durations{}); err == nil {
		t.Fatal("two masters lost until the end are accepted")
	}
	if fs, err := Schedule(1, Counts{RedisLost: 2}, time.Hour, Durations{RedisLost: time.Minute}); err != nil || len(fs) != 2 || fs[0].UntilEnd {
		t.Fatalf("two masters lost for a minute each: %v, %+v", err, fs)
	}
}

// TestCampaignShort is the short form of the fault campaign: on a real
// loopback cluster (3 NATS 2.9 nodes, a Redis Cluster of 3 masters with a
// replica each, 3 aupd processes) it publishes 30,000 events (at 400/s, so
// that every fault ends while events are still published) while one
// aupd is SIGKILLed and one SIGSTOPped past its ack wait, the verdict
// stream's leader is killed, a Redis master fails over and the SMTP sink
// is down for 10 s; every check of the table must pass. Then it changes
// what aupd did, one thing per check, and sees each check fail.
func TestCampaignShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault campaign brings up a cluster and runs for about two minutes")
	}
	cfg := Short()
	cfg.Dir = t.TempDir()
	cfg.Log = testWriter{t}
	var tampered *Result
	cfg.Inspect = func(ctx context.Context, c *cluster.Cluster, recheck func() (*Result, error)) error {
		var err error
		tampered, err = tamper(ctx, t, c, recheck)
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if res != nil && len(res.Rows) > 0 {
		var b strings.Builder
		res.Print(&b)
		t.Log(b.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass {
		t.Fatalf("the campaign failed:\n%s", strings.Join(res.Failures, "\n"))
	}
	for _, f := range res.Faults {
		if f.Err != nil || f.Ended < f.Started {
			t.Errorf("fault %d %s: %v", f.N, f.Kind, f.Err)
		}
		if f.Past > 0 {
			t.Errorf("fault %d %s ended %s after publishing", f.N, f.Kind, f.Past)
		}
		if len(f.Stall.Shards) != 3 || !f.CaughtUp.All {
			t.Errorf("fault %d %s: stalls %v for 3 shards, caught up %+v", f.N, f.Kind, f.Stall.Shards, f.CaughtUp)
		}
	}
	if len(res.Faults) != 5 {
		t.Errorf("%d faults, want 5", len(res.Faults))
	}
	// The tampered run fails every check it touched, naming the accounts.
	if tampered == nil {
		t.Fatal("no recheck")
	}
	failed := strings.Join(tampered.Failures, "\n")
	for _, want := range []string{
		"events lost: 1 (in 1 accounts)", "user000002@example.com: 1 of its",
		"events counted twice or wrongly: 1 (in 1 accounts)", "user000003@globex.test: 1 window members that are no counting id of it: member 626f67757321",
		"events dead-lettered: 301",
		"suspension events per crossing:", "did not cross",
		"notices per suspension:", "has no notice", "several Message-IDs: 1",
		"notices whose evidence.txt is not 3 counted events of the account: 2", "sample never-counted is not a counting event",
		"notices for no known suspension: 1",
	} {
		if !strings.Contains(failed, want) {
			t.Errorf("tampered checks do not say %q:\n%s", want, failed)
		}
	}
	if tampered.Pass {
		t.Error("the tampered run passes")
	}
}

// tamper changes one thing per check: a counted id removed and a bogus
// one added, a dead letter and a suspension event that aupd did not
// publish, a notice for no suspension and a second notice, with a bad
// sample, for a real one; then it runs the checks again.
func tamper(ctx context.Context, t *testing.T, c *cluster.Cluster, recheck func() (*Result, error)) (*Result, error) {
	// aupd would notice the suspension event below and send its notice.
	for _, a := range c.Aupd {
		if err := a.Kill(); err != nil {
			return nil, err
		}
	}
	rdb := c.NewRedisClient()
	defer rdb.Close()
	if err := rdb.ZPopMin(ctx, store.AccountKey(prefix, "user000002@example.com", "w")).Err(); err != nil {
		return nil, err
	}
	if err := rdb.ZAdd(ctx, store.AccountKey(prefix, "user000003@globex.test", "w"), redisZ("bogus!")).Err(); err != nil {
		return nil, err
	}
	nc, err := c.ConnectNATS("tamper")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	dl := nats.NewMsg("aup.dlq.verdict")
	dl.Data = []byte("{}")
	dl.Header.Set(consumers.HeaderReason, "invalid_json")
	dl.Header.Set(consumers.HeaderSeq, "999999999")
	if _, err := js.PublishMsg(ctx, dl); err != nil {
		return nil, err
	}
	// user000000 stays exactly at the threshold: it did not cross.
	ev := events.AccountEvent{ID: "tamper-1", Type: "suspended", Time: time.Now(), Account: "user000000@example.com", Actor: "aupd", Reason: events.ReasonAUP,
		Suspension: &events.AUPSuspension{ID: "tamper-1", Action: "suspend"}}
	data, _ := json.Marshal(ev)
	if _, err := js.Publish(ctx, events.AccountSubjectPrefix+"suspended", data); err != nil {
		return nil, err
	}
	msg := "From: x@example.net\r\nTo: abuse@example.com\r\nMessage-ID: <tamper@example.net>\r\nSubject: hello\r\n\r\nnot a notice\r\n"
	if err := smtp.SendMail(c.SMTP.Addr, nil, "x@example.net", []string{"abuse@example.com"}, []byte(msg)); err != nil {
		return nil, err
	}
	// A second notice, with a Message-ID of its own, for a real
	// suspension, and with one sample that aupd never counted.
	real := c.SMTP.Notices()[0]
	second := "From: x@example.net\r\nTo: abuse@example.com\r\nMessage-ID: <tamper-2@example.net>\r\nSubject: again\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nagain\r\n" +
		"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"evidence.txt\"\r\n\r\n" +
		"Account:      " + real.Account + "\r\nSuspension:   " + real.Suspension + "\r\nVerdict ID:   never-counted\r\n--b--\r\n"
	if err := smtp.SendMail(c.SMTP.Addr, nil, "x@example.net", []string{"abuse@example.com"}, []byte(second)); err != nil {
		return nil, err
	}
	res, err := recheck()
	if err == nil {
		var b strings.Builder
		res.Print(&b)
		t.Log("after tampering:\n" + b.String())
	}
	return res, err
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func redisZ(member string) redis.Z { return redis.Z{Score: 1, Member: member} }

// TestOriginalOf maps event ids back to the plan.
func TestOriginalOf(t *testing.T) {
	p, err := NewPlan(2000, 20, 3, 0.05, 0.01, 0.4, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{0, 7, p.NOrig - 1} {
		e := p.Original(k)
		got, ok := p.OriginalOf(e.ID)
		if !ok || got != k {
			t.Fatalf("OriginalOf(%s) = %d, %v; want %d", e.ID, got, ok, k)
		}
		if p.Counts(k, e.Account) != (e.Verdict != "ham") || p.Counts(k, "someone@else.test") {
			t.Fatalf("Counts(%d) wrong for %s %s", k, e.Account, e.Verdict)
		}
	}
	for _, id := range []string{"", "probe1-001", "c4-00000001-00000000", "c3-99999999-00000000"} {
		if _, ok := p.OriginalOf(id); ok {
			t.Fatalf("OriginalOf(%q) is an original", id)
		}
	}
}
