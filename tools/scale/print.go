package scale

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Print writes the figures: the load and the machine, one row per run,
// each run's Redis masters and NATS nodes, and what each run left.
func (res *Result) Print(w io.Writer) {
	m := res.Machine
	fmt.Fprintf(w, "load     %d events for %d accounts (mean payload %d bytes), seed %d; aupd batch %d, workers %d, max_wait %s, threshold %d (window cap %d), redis.wait_replicas 1\n",
		res.Events, res.Accounts, res.MeanPayload, res.Seed, res.Batch, res.Workers, res.MaxWait, res.Threshold, res.Cap)
	fmt.Fprintf(w, "machine  %d cores, %s; load average at start %s; %s, redis-server %s, %s\n",
		m.Cores, m.Model, m.LoadAvg, orUnknown(m.NATS, "nats-server ?"), orUnknown(m.Redis, "?"), m.Go)
	fmt.Fprintf(w, "cluster  3 NATS nodes (R3 streams), Redis Cluster of 3 masters + 3 replicas (AOF everysec), the aupd processes, all on these %d cores\n", m.Cores)
	if res.Standalone != nil {
		fmt.Fprintln(w, "         then one aupd on a standalone Redis with one replica (the same settings), on the same NATS nodes")
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "aupd procs\tevents/s\taupd µs/ev\tnats µs/ev\tredis µs/ev\t(masters\t+ replicas)\tsum µs/ev\tnats publish µs/ev\tmean batch\tbatch ms\twindow\t")
	for _, r := range res.drains() {
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%.1f\t%d ev in %s\t\n", r.procs(), r.EventsPerSec(),
			r.PerEvent(r.Aupd), r.PerEvent(r.NATS), r.PerEvent(r.Redis()), r.PerEvent(r.RedisMasters), r.PerEvent(r.RedisRepls),
			r.PerEvent(r.Aupd+r.NATS+r.Redis()), publishPerEvent(r, res.Events), r.MeanBatch(), meanMS(r.BatchTime, r.Batches),
			r.WindowEvents, r.Window.Round(10*time.Millisecond))
	}
	tw.Flush()
	fmt.Fprintln(w, "  µs/ev: CPU (user + system) in the window per event applied, summed over the component's processes (aupd, nats-server and redis-server: /proc/<pid>/stat; Redis: INFO cpu)")
	fmt.Fprintln(w, "  mean batch: events per batch aupd applied (a fetch of up to the batch size that the server filled within max_wait); batch ms: its mean time to apply (Redis, WAIT, account events)")
	fmt.Fprintln(w, "  window: from every aupd process ready (all started once the backlog was published) to the consumer drained; nats publish: NATS CPU per event while the backlog was published")
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "aupd procs\tredis master\tshare\tµs/ev\tmain thread µs/ev\tceiling ev/s at 1 core\tat 60%\treplica\tµs/ev\t")
	for _, r := range res.drains() {
		for _, s := range r.Shards {
			fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%.1f\t%.1f\t%.0f\t%.0f\t%s\t%.1f\t\n", r.procs(), s.Master, 100*s.Share, s.PerEvent(r), s.MainPerEvent(r),
				s.Ceiling(r), 0.6*s.Ceiling(r), s.Replica, perShareEvent(s.ReplicaCPU, s, r))
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "  share: the backlog's events on the master's slots; µs/ev: its CPU in the window per event on its slots (every thread; main thread: the one")
	fmt.Fprintln(w, "  that runs commands and scripts, one at a time); ceiling: one core over the main thread's figure")
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "aupd procs\tnats node\tµs/ev draining\tµs/ev publishing\tleads\t")
	for _, r := range res.drains() {
		for _, n := range r.NATSNodes {
			var leads []string
			if n.StreamLeader {
				leads = append(leads, "stream")
			}
			if n.ConsLead {
				leads = append(leads, "consumer")
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%s\t\n", r.procs(), n.Name, r.PerEvent(n.CPU), float64(n.PublishCPU.Microseconds())/float64(res.Events), strings.Join(leads, ", "))
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "  leads: the node led the verdict stream (AUP_VERDICTS) or aupd's consumer of it at the end of the run")
	fmt.Fprintln(w)
	res.printStandalone(w)

	for _, r := range res.drains() {
		keys := make([]string, 0, len(r.Outcomes))
		for k := range r.Outcomes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.Outcomes[k]))
		}
		fmt.Fprintf(w, "%s: outcomes %s; suspensions %d, notices %d; dead letters %d, Redis errors %d (batches retried)\n", r.name(),
			strings.Join(parts, ", "), r.Suspensions, r.Notices, r.DeadLetters, r.RedisErrors)
		fmt.Fprintf(w, "        Redis used_memory +%d bytes over masters for %d accounts (%.0f bytes each, notices and indexes included); %d notice hashes, %s\n",
			r.RedisBytes, r.RedisAccts, float64(r.RedisBytes)/float64(max(1, r.RedisAccts)), len(r.NoticeBytes), noticeSizes(r.NoticeBytes))
		fmt.Fprintf(w, "        verdict stream %d bytes for %d events (%.0f bytes each, one replica)\n", r.StoredBytes, res.Events, float64(r.StoredBytes)/float64(max(1, res.Events)))
		fmt.Fprintf(w, "        MEMORY USAGE of the accounts' keys %.0f bytes each; idle CPU per second: aupd %s, nats %s, redis %s\n",
			float64(r.AccountBytes)/float64(max(1, r.RedisAccts)), r.IdleAupd.Round(time.Millisecond), r.IdleNATS.Round(time.Millisecond), r.IdleRedis.Round(time.Millisecond))
		if len(r.Problems) == 0 {
			fmt.Fprintln(w, "        checks: every event applied once, every window in Redis as the backlog says, one notice per suspension")
		}
		for _, p := range r.Problems {
			fmt.Fprintf(w, "        PROBLEM: %s\n", p)
		}
	}
}

// ratioTarget is the most a Cluster master's main-thread CPU an event
// may be, as a multiple of a standalone Redis's (issue #27).
const ratioTarget = 1.3

// printStandalone sets each Cluster run's Redis figures beside the
// standalone drain's.
func (res *Result) printStandalone(w io.Writer) {
	sa := res.Standalone
	if sa == nil {
		return
	}
	fmt.Fprintln(w, "Cluster against standalone Redis: the same backlog, AOF everysec and one replica with redis.wait_replicas 1 on both")
	fmt.Fprintf(w, "  standalone, 1 aupd: main thread %.1f µs/ev on the master, replica %.1f µs/ev\n", sa.MainPerEvent(), sa.ReplicaPerEvent())
	for _, r := range res.Runs {
		fmt.Fprintf(w, "  cluster, %d aupd: main thread %.1f µs/ev on a master (%s), replica %.1f µs/ev; main thread %s\n",
			r.Procs, r.MainPerEvent(), mainRange(r), r.ReplicaPerEvent(), ratio(r.MainPerEvent(), sa.MainPerEvent()))
	}
	fmt.Fprintf(w, "  main thread µs/ev: the masters' main-thread CPU in the window over the events on their slots; target: a Cluster master at most %.1fx standalone\n", ratioTarget)
	fmt.Fprintln(w)
}

// mainRange is the lowest and the highest master's main-thread figure.
func mainRange(r Drain) string {
	if len(r.Shards) == 0 {
		return "no masters"
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range r.Shards {
		lo, hi = min(lo, s.MainPerEvent(r)), max(hi, s.MainPerEvent(r))
	}
	return fmt.Sprintf("masters %.1f-%.1f", lo, hi)
}

// ratio is cluster/standalone with its verdict against ratioTarget.
func ratio(cluster, standalone float64) string {
	if standalone <= 0 {
		return "not compared (no standalone figure)"
	}
	x := cluster / standalone
	verdict := "meets"
	if x > ratioTarget {
		verdict = "MISSES"
	}
	return fmt.Sprintf("%.2fx the standalone figure: %s the %.1fx target", x, verdict, ratioTarget)
}

// procs is the run's entry in the tables' first column.
func (r Drain) procs() string {
	if r.Standalone {
		return "1 standalone"
	}
	return strconv.Itoa(r.Procs)
}

func publishPerEvent(r Drain, events int) float64 {
	return float64(r.PublishNATS.Microseconds()) / float64(events)
}

func perShareEvent(d time.Duration, s Shard, r Drain) float64 {
	if e := s.Events(r); e > 0 {
		return float64(d.Microseconds()) / e
	}
	return 0
}

func noticeSizes(b []int64) string {
	if len(b) == 0 {
		return "none to measure"
	}
	s := slices.Clone(b)
	slices.Sort(s)
	var sum int64
	for _, x := range s {
		sum += x
	}
	return fmt.Sprintf("MEMORY USAGE min %d, median %d, max %d, mean %d bytes", s[0], s[len(s)/2], s[len(s)-1], sum/int64(len(s)))
}

func meanMS(d time.Duration, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / 1000 / float64(n)
}

func orUnknown(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
