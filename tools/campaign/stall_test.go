package campaign

import (
	"testing"
	"time"
)

const ms = time.Millisecond

// steady publishes an event of shard every 100 ms from from to to, each
// acknowledged 50 ms after it was stored, but for those stored in
// [stuckFrom, stuckTo), which are acknowledged at release.
func steady(tl *timeline, shard int, seq *uint64, from, to, stuckFrom, stuckTo, release time.Duration) {
	for t := from; t < to; t += 100 * ms {
		*seq++
		tl.pubs = append(tl.pubs, pubSeen{t, *seq, shard})
		done := t + 50*ms
		if t >= stuckFrom && t < stuckTo {
			done = release
		}
		tl.acks = append(tl.acks, ackSeen{done, *seq})
	}
}

// TestStallsPerShard checks the stall computation on a timeline where one
// shard's events wait 5 s while the other's are acknowledged at once: the
// stuck shard's stall is timed from the fault's start (not its end) up to
// the next fault's start, where it is marked as going on; the other
// shard's and the cluster's stay short; a stall that began before a fault
// counts from the fault's start; and caught up is until the last event
// sent before the fault's end was acknowledged.
func TestStallsPerShard(t *testing.T) {
	tl := &timeline{}
	var seq uint64
	steady(tl, 0, &seq, 0, 12*time.Second, -1, -1, 0)
	steady(tl, 1, &seq, 0, 12*time.Second, 3*time.Second, 8*time.Second, 8*time.Second)
	tl.pubs = append(tl.pubs, pubSeen{5 * time.Second, 9999, -1}) // an invalid event: no shard
	evs, fromFloor := joinSeen(tl.pubs, tl.acks, nil)
	if fromFloor != 0 || len(evs) != 240 {
		t.Fatalf("%d events, %d from the floor", len(evs), fromFloor)
	}
	faults := []Fault{
		{N: 1, Kind: RedisFailover, Started: 2500 * ms, Ended: 4 * time.Second, Shard: 1},
		{N: 2, Kind: AupdKill, Started: 6 * time.Second, Ended: 7 * time.Second, Shard: -1},
		{N: 3, Kind: SMTPOutage, Started: 3 * time.Second, Ended: 4 * time.Second, Shard: -1},
		{N: 4, Kind: AupdStop, Started: 10 * time.Second, Ended: 11 * time.Second, Shard: -1},
	}
	stallReport(faults, evs, 2, 13*time.Second)
	near := func(what string, got, want time.Duration) {
		t.Helper()
		if got < want-5*ms || got > want+5*ms {
			t.Errorf("%s: %s, want %s", what, got, want)
		}
	}
	f := faults[0]
	// Shard 1: last ack at 2.95 s, next event sent at 3.0 s, acked at
	// 8 s; fault 1's time ends when fault 2 starts, at 6 s, with the
	// stall going on.
	near("fault 1, shard 1", f.Stall.Shards[1], 3*time.Second)
	near("fault 1, from", f.Stall.AnyFrom, 500*ms)
	if !f.Stall.ShardsOn[1] || f.Stall.ShardsOn[0] {
		t.Errorf("fault 1: stalls going on into fault 2: %v, want shard 1's only", f.Stall.ShardsOn)
	}
	near("fault 1, shard 0", f.Stall.Shards[0], 50*ms)
	// With shard 1 outstanding, the time between two of shard 0's acks
	// counts whole.
	near("fault 1, no shard acked", f.Stall.Any, 100*ms)
	// Everything stored by 4 s is acked at 8 s.
	if !f.CaughtUp.All {
		t.Error("fault 1 not caught up")
	}
	near("fault 1 caught up", f.CaughtUp.After, 4*time.Second)
	// Fault 2 starts inside shard 1's stall: from its start to 8 s.
	near("fault 2, shard 1", faults[1].Stall.Shards[1], 2*time.Second)
	if faults[1].Stall.ShardsOn[1] {
		t.Error("fault 2: shard 1's stall marked as going on into fault 4")
	}
	// The SMTP outage's time runs to the next sequential fault's start
	// (6 s): the stall counts from its start (3 s).
	near("smtp outage, shard 1", faults[2].Stall.Shards[1], 3*time.Second)
	near("fault 4, shard 1", faults[3].Stall.Shards[1], 50*ms)
	near("baseline", baseline(evs, 2, 2500*ms), 50*ms)
}

// TestStallMissedAcksAndNever checks the two ends: an ack the campaign did
// not see takes the time of the first ack floor sample at or above it
// (a floor that went back changes nothing), and an event never
// acknowledged stalls until aupd drained and is never caught up.
func TestStallMissedAcksAndNever(t *testing.T) {
	pubs := []pubSeen{{0, 1, 0}, {100 * ms, 2, 0}, {200 * ms, 3, 0}, {300 * ms, 4, 0}}
	acks := []ackSeen{{150 * ms, 1}, {2 * time.Second, 3}}
	floors := []ackSeen{{time.Second, 0}, {1500 * ms, 2}, {1600 * ms, 1}}
	evs, fromFloor := joinSeen(pubs, acks, floors)
	if fromFloor != 1 {
		t.Fatalf("%d acks from the floor, want 1", fromFloor)
	}
	if evs[1].done != 1500*ms {
		t.Fatalf("event 2 done at %s, want the floor's 1.5s", evs[1].done)
	}
	f := []Fault{{N: 1, Kind: AupdKill, Started: 50 * ms, Ended: 350 * ms}}
	stallReport(f, evs, 1, 10*time.Second)
	// Event 4 is never acknowledged: from 2 s (the last ack) to 10 s.
	if f[0].Stall.Shards[0] != 8*time.Second || f[0].Stall.Any != 8*time.Second {
		t.Errorf("stall %v / %s, want 8s", f[0].Stall.Shards, f[0].Stall.Any)
	}
	if f[0].CaughtUp.All || f[0].CaughtUp.After != 0 {
		t.Errorf("caught up %+v, with event 4 (stored before the fault's end) never acknowledged", f[0].CaughtUp)
	}
}

// TestAckStreamSeq reads the stream sequence from both forms of an ack
// subject.
func TestAckStreamSeq(t *testing.T) {
	for subj, want := range map[string]uint64{
		"$JS.ACK.AUP_VERDICTS.aupd.1.4711.4700.1700000000000000000.3":                 4711,
		"$JS.ACK.hub.ACCHASH.AUP_VERDICTS.aupd.2.4712.4701.1700000000000000000.3.tok": 4712,
		"$JS.ACK.AUP_VERDICTS.aupd.1.x.4700.1700000000000000000.3":                    0,
		"$JS.API.CONSUMER.INFO.AUP_VERDICTS.aupd":                                     0,
	} {
		got, ok := ackStreamSeq(subj)
		if got != want || ok != (want > 0) {
			t.Errorf("ackStreamSeq(%q) = %d, %v; want %d", subj, got, ok, want)
		}
	}
}
