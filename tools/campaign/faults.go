package campaign

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/cluster"
	"github.com/aupd/aupd/internal/store"
)

// Fault kinds.
const (
	AupdKill      = "aupd-kill"      // SIGKILL an aupd process, restart it
	AupdStop      = "aupd-stop"      // SIGSTOP an aupd past its ack wait, then SIGCONT
	NATSKill      = "nats-kill"      // kill a NATS node that does not lead the verdict stream, restart it
	NATSLeader    = "nats-leader"    // kill the verdict stream's leader, restart it
	NATSQuorum    = "nats-quorum"    // kill 2 of the 3 NATS nodes (JetStream without quorum), restart them
	RedisFailover = "redis-failover" // kill a Redis master; its replica takes over; bring it back
	RedisLost     = "redis-lost"     // kill a Redis master; its replica takes over; the old one stays down long (by default until publishing ends)
	RedisShard    = "redis-shard"    // kill a Redis master and its replicas (the shard fully down), restart them
	SMTPOutage    = "smtp-outage"    // the SMTP sink refuses connections for a while
)

var kinds = []string{AupdKill, AupdStop, NATSKill, NATSLeader, NATSQuorum, RedisFailover, RedisLost, RedisShard}

// Kinds lists the fault kinds -faults takes.
func Kinds() string { return strings.Join(kinds, ", ") }

// Counts is how many faults of each kind (but the SMTP outage) a run
// injects.
type Counts map[string]int

// ParseCounts reads "aupd-kill=2,redis-failover=1".
func ParseCounts(s string) (Counts, error) {
	c := Counts{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 || !slices.Contains(kinds, k) {
			return nil, fmt.Errorf("faults: %q is not kind=count with kind one of %s", part, Kinds())
		}
		c[k] += n
	}
	return c, nil
}

func (c Counts) String() string {
	var parts []string
	for _, k := range kinds {
		if c[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
		}
	}
	return strings.Join(parts, ",")
}

// Fault is one fault of the schedule.
type Fault struct {
	N      int
	Kind   string
	At     time.Duration // planned start, from the start of publishing
	Budget time.Duration // the time planned for it, from At until it has ended
	Target int           // which process (an index, taken modulo their number), or which account's slot
	Down   time.Duration // how long the process, node or shard stays down or stopped
	// UntilEnd: a lost master that stays down until publishing has
	// ended (Down is then unused).
	UntilEnd bool

	// What happened.
	Started, Ended time.Duration // from the start of publishing
	What           string        // the target, by name
	Detail         string
	Shard          int // the Redis shard it hit (an index of Result.Shards), -1 for none
	Err            error
	// Past is how long after the end of publishing the fault ended (0:
	// before; a lost master kept down until the end is past by design).
	Past time.Duration
	// Stall and CaughtUp are filled from the acknowledgements seen
	// (stall.go) once aupd has drained.
	Stall    Stall
	CaughtUp CaughtUp
	Notice   string // the SMTP outage: when the sink accepted a notice again
}

// Durations are the down times a schedule gives its faults; zero takes a
// seeded default where there is one.
type Durations struct {
	AckWait    time.Duration // nats.consumer.ack_wait: an aupd-stop lasts longer
	SMTPOutage time.Duration // the SMTP outage (0: none)
	RedisDown  time.Duration // redis-failover (default 0-3 s, seeded)
	RedisLost  time.Duration // redis-lost (0: until publishing ends)
	ShardDown  time.Duration // redis-shard (default 20 s)
	QuorumDown time.Duration // nats-quorum (default 15 s)
}

// The time a fault takes beyond its down time, at most (observed on this
// machine, with room): a restart until ready, a NATS election and the
// streams current again, a Redis promotion (cluster-node-timeout 2 s) and
// a rejoin.
const (
	aupdReady   = 5 * time.Second
	natsCurrent = 10 * time.Second
	natsElect   = 12 * time.Second
	redisPromo  = 8 * time.Second
	redisRejoin = 15 * time.Second
)

// budget is the time planned for f from its start until it has ended.
func (f *Fault) budget() time.Duration {
	switch f.Kind {
	case AupdKill:
		return f.Down + aupdReady
	case AupdStop:
		return f.Down + 2*time.Second
	case NATSKill, NATSQuorum:
		return f.Down + natsCurrent
	case NATSLeader:
		return max(f.Down, natsElect) + natsCurrent
	case RedisLost:
		if f.UntilEnd {
			return redisPromo
		}
		return redisPromo + f.Down + redisRejoin
	case RedisFailover:
		return redisPromo + f.Down + redisRejoin
	case RedisShard:
		return f.Down + redisRejoin
	}
	return f.Down
}

// Schedule is the seeded, repeatable fault schedule: the faults of counts
// in a shuffled order, each with its target and down time, one after the
// other, every one planned to end before publishing does (span): a
// twentieth of the span with no fault first, then the time left over
// between them in seeded shares. A lost master kept until the end goes
// last (one at most). The SMTP outage, when d.SMTPOutage > 0, runs beside
// them, from between 40% and 60% of the span, when notices are due, and
// ends before the span does. A plan whose faults cannot fit is an error
// that says by how much.
func Schedule(seed uint64, counts Counts, span time.Duration, d Durations) ([]Fault, error) {
	r := rand.New(rand.NewPCG(seed, 0x6661756c))
	var fs []Fault
	for _, k := range kinds {
		for range counts[k] {
			fs = append(fs, Fault{Kind: k})
		}
	}
	r.Shuffle(len(fs), func(i, j int) { fs[i], fs[j] = fs[j], fs[i] })
	if d.RedisLost == 0 && counts[RedisLost] > 1 {
		return nil, fmt.Errorf("schedule: %d %s faults: only one can keep its master down until publishing ends (give -redis-lost-down)", counts[RedisLost], RedisLost)
	}
	var total time.Duration
	for i := range fs {
		f := &fs[i]
		f.Target = r.IntN(1 << 20)
		f.Down = downTime(r, f.Kind, d)
		f.UntilEnd = f.Kind == RedisLost && d.RedisLost == 0
		f.Budget = f.budget()
		total += f.Budget
	}
	// The lost master kept until the end last: the faults after it would
	// meet a shard with no replica.
	sort.SliceStable(fs, func(i, j int) bool { return !fs[i].UntilEnd && fs[j].UntilEnd })
	lead := span / 20
	slack := span - lead - total
	if slack < 0 {
		return nil, fmt.Errorf("schedule: the faults (%s) need about %s one after the other, %s with the first twentieth of the run free, but publishing lasts %s: publish more events, at a lower rate, or inject fewer faults",
			counts, total.Round(time.Second), (total + lead).Round(time.Second), span.Round(time.Second))
	}
	spread(r, fs, lead, slack)
	if d.SMTPOutage > 0 {
		if d.SMTPOutage > span-span*4/10 {
			return nil, fmt.Errorf("schedule: an SMTP outage of %s does not fit in the last 60%% of the %s of publishing", d.SMTPOutage, span.Round(time.Second))
		}
		// Mid-run, when accounts start crossing and notices are due.
		at := span*4/10 + time.Duration(r.Int64N(int64(span/5)+1))
		fs = append(fs, Fault{Kind: SMTPOutage, At: min(at, span-d.SMTPOutage), Down: d.SMTPOutage, Budget: d.SMTPOutage})
	}
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].At < fs[j].At })
	for i := range fs {
		fs[i].N = i + 1
		fs[i].Shard = -1
	}
	return fs, nil
}

// spread places the faults one after the other from lead on, with slack
// shared out in seeded parts before each and after the last.
func spread(r *rand.Rand, fs []Fault, lead, slack time.Duration) {
	w := make([]float64, len(fs)+1)
	sum := 0.0
	for i := range w {
		w[i] = 0.5 + r.Float64()
		sum += w[i]
	}
	t := lead
	for i := range fs {
		t += time.Duration(float64(slack) * w[i] / sum)
		fs[i].At = t
		t += fs[i].Budget
	}
}

// downTime is a fault's down time: the one asked for, else seeded.
func downTime(r *rand.Rand, kind string, d Durations) time.Duration {
	or := func(asked, def time.Duration) time.Duration {
		if asked > 0 {
			return asked
		}
		return def
	}
	switch kind {
	case AupdKill:
		return time.Duration(500+r.IntN(2500)) * time.Millisecond
	case AupdStop:
		return d.AckWait + time.Duration(1000+r.IntN(3000))*time.Millisecond
	case NATSKill, NATSLeader:
		return time.Duration(1000+r.IntN(4000)) * time.Millisecond
	case NATSQuorum:
		return or(d.QuorumDown, 15*time.Second)
	case RedisFailover:
		return or(d.RedisDown, time.Duration(r.IntN(3000))*time.Millisecond)
	case RedisLost:
		return d.RedisLost
	case RedisShard:
		return or(d.ShardDown, 20*time.Second)
	}
	return 0
}

// inject runs one fault (not the SMTP outage) to its end: the process is
// back and ready, the node current, the old master a replica again.
func (r *runner) inject(ctx context.Context, f *Fault) error {
	c := r.c
	switch f.Kind {
	case AupdKill:
		a := c.Aupd[f.Target%len(c.Aupd)]
		f.What = a.Name
		if err := a.Kill(); err != nil {
			return err
		}
		if err := cluster.Sleep(ctx, f.Down); err != nil {
			return err
		}
		t := time.Now()
		if err := a.StartReady(ctx, 2*time.Minute); err != nil {
			return err
		}
		f.Detail = fmt.Sprintf("SIGKILL, down %s, ready %s after restart", f.Down.Round(time.Millisecond), since(t))
	case AupdStop:
		a := c.Aupd[f.Target%len(c.Aupd)]
		f.What = a.Name
		if err := a.Stop(); err != nil {
			return err
		}
		if err := cluster.Sleep(ctx, f.Down); err != nil {
			_ = a.Cont()
			return err
		}
		if err := a.Cont(); err != nil {
			return err
		}
		f.Detail = fmt.Sprintf("SIGSTOP for %s (ack_wait %s), then SIGCONT", f.Down.Round(time.Millisecond), r.cfg.AckWait)
	case NATSKill, NATSLeader:
		leader, err := c.StreamLeader(ctx, r.js, r.streams[0])
		if err != nil {
			return err
		}
		n := leader
		if f.Kind == NATSKill {
			var others []*cluster.NATSNode
			for _, x := range c.NATS {
				if x != leader {
					others = append(others, x)
				}
			}
			n = others[f.Target%len(others)]
		}
		f.What = n.ServerName
		t := time.Now()
		if err := n.Kill(); err != nil {
			return err
		}
		var elect time.Duration
		if n == leader {
			nl, err := c.WaitStreamLeader(ctx, r.js, r.streams[0], leader, time.Minute)
			if err != nil {
				return err
			}
			elect = time.Since(t)
			f.Detail = fmt.Sprintf("leader of %s; %s elected after %s; ", r.streams[0], nl.ServerName, elect.Round(time.Millisecond))
		}
		if err := cluster.Sleep(ctx, f.Down-time.Since(t)); err != nil {
			return err
		}
		down := time.Since(t)
		if err := n.Start(); err != nil {
			return err
		}
		if err := n.WaitHealthy(ctx, 2*time.Minute); err != nil {
			return err
		}
		for _, s := range r.streams {
			if err := c.WaitStreamCurrent(ctx, r.js, s, 2*time.Minute); err != nil {
				return fmt.Errorf("after restart of %s: %w", n.ServerName, err)
			}
		}
		f.Detail += fmt.Sprintf("SIGKILL, down %s, streams current %s after restart", down.Round(time.Millisecond), since(t.Add(down)))
	case NATSQuorum:
		return r.quorumLoss(ctx, f)
	case RedisFailover:
		acct, slot := r.targetSlot(f)
		fo, err := c.FailoverMaster(ctx, slot, f.Down)
		if fo.Old != nil {
			f.What = fo.Old.Name
		}
		if err != nil {
			return err
		}
		f.Detail = fmt.Sprintf("master of slot %d (%s); %s promoted after %s; old master a replica again after %s",
			slot, acct, fo.New.Name, fo.Promoted.Round(time.Millisecond), fo.Rejoined.Round(time.Millisecond))
	case RedisLost:
		return r.lostMaster(ctx, f)
	case RedisShard:
		acct, slot := r.targetSlot(f)
		so, err := c.ShardDown(ctx, slot, f.Down)
		if so.Master != nil {
			f.What = so.Master.Name
			for _, n := range so.Replicas {
				f.What += "+" + n.Name
			}
		}
		if err != nil {
			return err
		}
		f.Detail = fmt.Sprintf("master of slot %d (%s) and its replicas SIGKILLed, down %s, cluster ok %s after the kill",
			slot, acct, f.Down.Round(time.Millisecond), so.Back.Round(time.Millisecond))
	default:
		return fmt.Errorf("unknown fault %q", f.Kind)
	}
	return nil
}

// targetSlot is the account a Redis fault aims at and its slot, and
// notes the shard in f.
func (r *runner) targetSlot(f *Fault) (string, int) {
	acct := r.plan.Accounts[f.Target%len(r.plan.Accounts)]
	slot := cluster.SlotOf(store.AccountKey(prefix, acct, "w"))
	f.Shard = r.shards.of(slot)
	return acct, slot
}

// lostMaster kills a master and keeps it down after its replica took
// over: for f.Down, or, with f.UntilEnd, until publishing has ended; the
// shard has no replica meanwhile. Then it rejoins as a replica.
func (r *runner) lostMaster(ctx context.Context, f *Fault) error {
	acct, slot := r.targetSlot(f)
	fo, err := r.c.KillMaster(ctx, slot)
	if fo.Old != nil {
		f.What = fo.Old.Name
	}
	if err != nil {
		return err
	}
	t := time.Now()
	if f.UntilEnd {
		select {
		case <-r.publ:
		case <-ctx.Done():
			return ctx.Err()
		}
	} else if err := cluster.Sleep(ctx, f.Down-fo.Promoted); err != nil {
		return err
	}
	down := fo.Promoted + time.Since(t)
	t = time.Now()
	if err := r.c.Rejoin(ctx, fo.Old); err != nil {
		return err
	}
	until := "for " + down.Round(time.Millisecond).String()
	if f.UntilEnd {
		until = fmt.Sprintf("until publishing ended (%s)", down.Round(time.Millisecond))
	}
	f.Detail = fmt.Sprintf("master of slot %d (%s); %s promoted after %s; old master down %s, a replica again %s after its restart",
		slot, acct, fo.New.Name, fo.Promoted.Round(time.Millisecond), until, since(t))
	return nil
}

// quorumLoss kills two of the three NATS nodes (JetStream has no quorum
// for any stream), keeps them down for f.Down, restarts them, and waits
// until every stream's replicas are current.
func (r *runner) quorumLoss(ctx context.Context, f *Fault) error {
	c := r.c
	keep := f.Target % len(c.NATS)
	var down []*cluster.NATSNode
	for i, n := range c.NATS {
		if i != keep {
			down = append(down, n)
		}
	}
	names := make([]string, len(down))
	for i, n := range down {
		names[i] = n.ServerName
		if err := n.Kill(); err != nil {
			return err
		}
	}
	f.What = strings.Join(names, "+")
	t := time.Now()
	if err := cluster.Sleep(ctx, f.Down); err != nil {
		return err
	}
	for _, n := range down {
		if err := n.Start(); err != nil {
			return err
		}
	}
	back := time.Now()
	for _, n := range down {
		if err := n.WaitHealthy(ctx, 2*time.Minute); err != nil {
			return err
		}
	}
	for _, s := range r.streams {
		if err := c.WaitStreamCurrent(ctx, r.js, s, 2*time.Minute); err != nil {
			return fmt.Errorf("after restart of %s: %w", f.What, err)
		}
	}
	f.Detail = fmt.Sprintf("%d of %d nodes SIGKILLed, down %s, streams current %s after restart", len(down), len(c.NATS), back.Sub(t).Round(time.Millisecond), since(back))
	return nil
}

// outage takes the SMTP sink down for f.Down; recovery is until the sink
// accepts its next notice (none pending: zero).
func (r *runner) outage(ctx context.Context, f *Fault) error {
	f.What = "smtp sink"
	if err := r.c.SMTP.Down(); err != nil {
		return err
	}
	werr := cluster.Sleep(ctx, f.Down)
	if err := r.c.SMTP.Up(); err != nil {
		return err
	}
	f.Detail = fmt.Sprintf("connections refused for %s", f.Down.Round(time.Millisecond))
	return werr
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
