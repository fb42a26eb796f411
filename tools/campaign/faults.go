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
	RedisFailover = "redis-failover" // kill a Redis master; its replica takes over; bring it back
	SMTPOutage    = "smtp-outage"    // the SMTP sink refuses connections for a while
)

var kinds = []string{AupdKill, AupdStop, NATSKill, NATSLeader, RedisFailover}

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
			return nil, fmt.Errorf("faults: %q is not kind=count with kind one of %s", part, strings.Join(kinds, ", "))
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
	Target int           // which process (an index, taken modulo their number), or which account's slot
	Down   time.Duration // how long the process stays down or stopped

	// What happened.
	Started, Ended time.Duration // from the start of publishing
	What           string        // the target, by name
	Detail         string
	Recovery       time.Duration // from Ended until a probe published then was counted
	Probe          string
	Err            error
}

// Schedule is the seeded, repeatable fault schedule: the faults of counts
// in a shuffled order, spread over span (with seeded jitter), each with
// its target and down time; the SMTP outage, when outage > 0, starts
// between 40% and 60% of the span, when notices are due.
func Schedule(seed uint64, counts Counts, span, ackWait, outage time.Duration) []Fault {
	r := rand.New(rand.NewPCG(seed, 0x6661756c))
	var fs []Fault
	for _, k := range kinds {
		for range counts[k] {
			fs = append(fs, Fault{Kind: k})
		}
	}
	r.Shuffle(len(fs), func(i, j int) { fs[i], fs[j] = fs[j], fs[i] })
	step := span / time.Duration(len(fs)+1)
	for i := range fs {
		f := &fs[i]
		f.At = step*time.Duration(i+1) + time.Duration(r.Int64N(int64(step/4)+1)) - step/8
		f.Target = r.IntN(1 << 20)
		switch f.Kind {
		case AupdKill:
			f.Down = time.Duration(500+r.IntN(2500)) * time.Millisecond
		case AupdStop:
			f.Down = ackWait + time.Duration(1000+r.IntN(3000))*time.Millisecond
		case NATSKill, NATSLeader:
			f.Down = time.Duration(1000+r.IntN(4000)) * time.Millisecond
		case RedisFailover:
			f.Down = time.Duration(r.IntN(3000)) * time.Millisecond
		}
	}
	if outage > 0 {
		// Mid-run, when accounts start crossing and notices are due.
		fs = append(fs, Fault{Kind: SMTPOutage, At: span*4/10 + time.Duration(r.Int64N(int64(span/5)+1)), Down: outage})
	}
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].At < fs[j].At })
	for i := range fs {
		fs[i].N = i + 1
	}
	return fs
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
	case RedisFailover:
		acct := r.plan.Accounts[f.Target%len(r.plan.Accounts)]
		slot := cluster.SlotOf(store.AccountKey(prefix, acct, "w"))
		fo, err := c.FailoverMaster(ctx, slot, f.Down)
		if fo.Old != nil {
			f.What = fo.Old.Name
		}
		if err != nil {
			return err
		}
		f.Detail = fmt.Sprintf("master of slot %d (%s); %s promoted after %s; old master a replica again after %s",
			slot, acct, fo.New.Name, fo.Promoted.Round(time.Millisecond), fo.Rejoined.Round(time.Millisecond))
	default:
		return fmt.Errorf("unknown fault %q", f.Kind)
	}
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
