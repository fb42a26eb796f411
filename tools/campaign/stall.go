package campaign

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// How the campaign times a stall: it sees every acknowledgement aupd
// sends for a counting event (a ham event is acked without its shard,
// an invalid one has none). An ack is a NATS message to the subject the delivery named,
// $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>..., so a
// subscriber of $JS.ACK.<stream>.<consumer>.> gets a copy; the stream
// sequence names the event, which the campaign published for a known
// account, whose slot names its Redis shard. An event is outstanding from
// the moment it was first sent (a verdict JetStream could not store, with
// no quorum, waits as well) until its first ack; a stall is a time when events were outstanding and none was
// acknowledged. Acks the campaign missed (its connection was moving to
// another NATS node) take the time of the first sample of the consumer's
// ack floor at or above them.

// timeline is what the campaign saw, in time since publishing started.
type timeline struct {
	mu     sync.Mutex
	start  time.Time
	pubs   []pubSeen
	acks   []ackSeen
	floors []ackSeen // the verdict consumer's ack floor, sampled
}

type pubSeen struct {
	at    time.Duration // first sent
	seq   uint64
	shard int // -1: not timed (a ham or invalid event)
}

type ackSeen struct {
	at  time.Duration
	seq uint64
}

// begin sets the time everything is measured from (the subscription's
// goroutine reads it: under the lock).
func (tl *timeline) begin(t time.Time) {
	tl.mu.Lock()
	tl.start = t
	tl.mu.Unlock()
}

func (tl *timeline) now() time.Duration {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return time.Since(tl.start)
}

// published records an event JetStream stored; it has waited since it
// was first sent.
func (tl *timeline) published(seq uint64, shard int, sent time.Duration) {
	tl.mu.Lock()
	tl.pubs = append(tl.pubs, pubSeen{sent, seq, shard})
	tl.mu.Unlock()
}

func (tl *timeline) acked(seq uint64) {
	tl.mu.Lock()
	tl.acks = append(tl.acks, ackSeen{time.Since(tl.start), seq})
	tl.mu.Unlock()
}

func (tl *timeline) floor(seq uint64) {
	tl.mu.Lock()
	tl.floors = append(tl.floors, ackSeen{time.Since(tl.start), seq})
	tl.mu.Unlock()
}

// watchAcks subscribes to the acks of the verdict consumer: "+ACK" and
// "+TERM" (aupd terminates what it dead-letters) end an event; a nak
// does not.
func (tl *timeline) watchAcks(nc *nats.Conn, stream, durable string) (*nats.Subscription, error) {
	sub, err := nc.Subscribe("$JS.ACK."+stream+"."+durable+".>", func(m *nats.Msg) {
		if !strings.HasPrefix(string(m.Data), "+ACK") && !strings.HasPrefix(string(m.Data), "+TERM") {
			return
		}
		if seq, ok := ackStreamSeq(m.Subject); ok {
			tl.acked(seq)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to the verdict consumer's acks: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	return sub, nc.Flush()
}

// ackStreamSeq reads the stream sequence from an ack subject:
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>,
// or with a domain and an account hash after ACK (12 tokens).
func ackStreamSeq(subject string) (uint64, bool) {
	t := strings.Split(subject, ".")
	var tok string
	switch {
	case len(t) == 9 && t[0] == "$JS" && t[1] == "ACK":
		tok = t[5]
	case len(t) >= 12 && t[0] == "$JS" && t[1] == "ACK":
		tok = t[7]
	default:
		return 0, false
	}
	seq, err := strconv.ParseUint(tok, 10, 64)
	return seq, err == nil && seq > 0
}

// shardMap is the Redis Cluster's shards: slot ranges, fixed for a run
// (a failover changes a range's master, not the range).
type shardMap []slotRange

type slotRange struct{ lo, hi int }

func (m shardMap) of(slot int) int {
	for i, r := range m {
		if slot >= r.lo && slot <= r.hi {
			return i
		}
	}
	return -1
}

func (m shardMap) name(i int) string {
	return fmt.Sprintf("s%d (slots %d-%d)", i, m[i].lo, m[i].hi)
}

// readShards reads the slot ranges from CLUSTER SLOTS.
func readShards(ctx context.Context, rdb *redis.ClusterClient) (shardMap, error) {
	//nolint:staticcheck // CLUSTER SLOTS answers on Redis 7.0, which the campaign runs
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster slots: %w", err)
	}
	var m shardMap
	for _, s := range slots {
		m = append(m, slotRange{int(s.Start), int(s.End)})
	}
	slices.SortFunc(m, func(a, b slotRange) int { return a.lo - b.lo })
	return m, nil
}

// ---- pure: from what was seen to stalls --------------------------------.

// never is the done time of an event never seen acknowledged.
const never = time.Duration(1<<63 - 1)

// eventTimes is one event: when it was stored, on which shard, and when it
// was first acknowledged (never: not seen).
type eventTimes struct {
	pub, done time.Duration
	shard     int
}

// joinSeen joins what was seen by stream sequence. fromFloor counts the
// events whose ack was not seen and whose time comes from the ack floor.
func joinSeen(pubs []pubSeen, acks, floors []ackSeen) (evs []eventTimes, fromFloor int) {
	first := map[uint64]time.Duration{}
	for _, a := range acks {
		if t, ok := first[a.seq]; !ok || a.at < t {
			first[a.seq] = a.at
		}
	}
	fl := slices.Clone(floors)
	sort.SliceStable(fl, func(i, j int) bool { return fl[i].at < fl[j].at })
	for i := 1; i < len(fl); i++ { // a floor that went back: what it said before still holds
		fl[i].seq = max(fl[i].seq, fl[i-1].seq)
	}
	seen := map[uint64]bool{}
	for _, p := range pubs {
		if p.shard < 0 || seen[p.seq] {
			continue
		}
		seen[p.seq] = true
		e := eventTimes{pub: p.at, done: never, shard: p.shard}
		if t, ok := first[p.seq]; ok {
			e.done = t
		} else if i := sort.Search(len(fl), func(i int) bool { return fl[i].seq >= p.seq }); i < len(fl) {
			e.done = fl[i].at
			fromFloor++
		}
		e.pub = min(e.pub, e.done)
		evs = append(evs, e)
	}
	return evs, fromFloor
}

// gap is a time when events were outstanding and none was acknowledged:
// from from until the next ack at to (or the end of observation).
type gap struct{ from, to time.Duration }

// gaps are the stalls of a set of events, until end: between two
// consecutive acknowledgements, from the later of the first one and the
// first store of an event still outstanding, to the second.
func gaps(evs []eventTimes, end time.Duration) []gap {
	evs = slices.Clone(evs)
	sort.Slice(evs, func(i, j int) bool { return evs[i].done < evs[j].done })
	sufMin := make([]time.Duration, len(evs)+1)
	sufMin[len(evs)] = never
	for i := len(evs) - 1; i >= 0; i-- {
		sufMin[i] = min(sufMin[i+1], evs[i].pub)
	}
	var out []gap
	var prev time.Duration
	for i, e := range evs {
		to := min(e.done, end)
		if from := max(prev, sufMin[i]); from < to {
			out = append(out, gap{from, to})
		}
		if e.done == never {
			break
		}
		prev = e.done
	}
	return out
}

// Stall is the longest stall of a fault: a time with events outstanding
// and none acknowledged, between the fault's start and the next fault's.
type Stall struct {
	Any    time.Duration   // nothing acknowledged on any shard
	Shards []time.Duration // per shard: nothing of its accounts acknowledged
	// AnyFrom is when the longest stall of any shard began, from the
	// fault's start.
	AnyFrom time.Duration
	// On: a stall, of any shard or of all, was still under way when the
	// next fault started (it goes on in that fault's line).
	AnyOn    bool
	ShardsOn []bool
}

// longest is the longest part of gs between from and until (a stall under
// way at from counts from from, one under way at until up to until), when
// it began, and whether it was still under way at until.
func longest(gs []gap, from, until time.Duration) (d, began time.Duration, on bool) {
	for _, g := range gs {
		b, e := max(g.from, from), min(g.to, until)
		if e-b > d {
			d, began, on = e-b, b, g.to > until
		}
	}
	return d, began, on
}

// CaughtUp is how long after a fault's end every event sent before its
// end was acknowledged (All false: some never were).
type CaughtUp struct {
	After time.Duration
	All   bool
}

func caughtUp(evs []eventTimes, end time.Duration) CaughtUp {
	c := CaughtUp{All: true}
	for _, e := range evs {
		if e.pub > end {
			continue
		}
		if e.done == never {
			return CaughtUp{}
		}
		c.After = max(c.After, e.done-end)
	}
	return c
}

// stallReport fills every fault's stall and catch-up from the timeline:
// a fault's stalls are those under way from its start until the next
// fault of the sequence starts (the last: until aupd drained), so that no
// stall is counted twice in one fault's line and the next's.
func stallReport(faults []Fault, evs []eventTimes, nShards int, drained time.Duration) {
	byShard := make([][]eventTimes, nShards)
	for _, e := range evs {
		byShard[e.shard] = append(byShard[e.shard], e)
	}
	all := gaps(evs, drained)
	per := make([][]gap, nShards)
	for i := range per {
		per[i] = gaps(byShard[i], drained)
	}
	for i := range faults {
		f := &faults[i]
		until := drained
		for _, g := range faults {
			if g.Kind != SMTPOutage && g.Started > f.Started && g.Started < until {
				until = g.Started
			}
		}
		f.Stall.Any, _, f.Stall.AnyOn = longest(all, f.Started, until)
		f.Stall.Shards = make([]time.Duration, nShards)
		f.Stall.ShardsOn = make([]bool, nShards)
		var worst time.Duration
		for s := range per {
			d, began, on := longest(per[s], f.Started, until)
			f.Stall.Shards[s], f.Stall.ShardsOn[s] = d, on
			if d > worst {
				worst, f.Stall.AnyFrom = d, began-f.Started
			}
		}
		f.CaughtUp = caughtUp(evs, f.Ended)
	}
}

// baseline is the longest stall of any shard before the first fault: what
// the run shows with nothing broken.
func baseline(evs []eventTimes, nShards int, first time.Duration) time.Duration {
	byShard := make([][]eventTimes, nShards)
	for _, e := range evs {
		byShard[e.shard] = append(byShard[e.shard], e)
	}
	var worst time.Duration
	for _, b := range byShard {
		d, _, _ := longest(gaps(b, first), 0, first)
		worst = max(worst, d)
	}
	return worst
}
