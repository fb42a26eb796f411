package app

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/notifier"
	"github.com/aupd/aupd/rules"
)

// stateCollector reports the state operators watch, read at scrape time:
// accounts suspended now (by reason), accounts in lockout, notices
// pending and failed, accounts with account events waiting in their
// outbox, and the verdict consumer's lag. A scrape costs a bounded amount
// of Redis and JetStream work: at most maxScan accounts are read per
// gauge, and the result is cached for ttl, so that several Prometheus
// servers (or a refreshing dashboard) cost no more than one.
type stateCollector struct {
	rdb    redis.UniversalClient
	prefix string
	// lag is the verdict consumer's lag as the readiness checker last read
	// it (nil: never), and why its last read failed.
	lag func() (*consumerLag, error)
	// noticeConsumer looks up the notifier's durable consumer (created by
	// the notifier when it starts).
	noticeConsumer func(ctx context.Context) (jetstream.Consumer, error)
	notices        *notifier.Store
	// outboxPending counts accounts with account events in their outbox.
	outboxPending func(ctx context.Context) (int64, error)
	retention     time.Duration // of failed notices
	log           *slog.Logger
	now           func() time.Time
	ttl           time.Duration
	maxScan       int
	timeout       time.Duration

	mu      sync.Mutex
	at      time.Time
	metrics []prometheus.Metric

	errors    *prometheus.CounterVec
	suspended *prometheus.Desc
	lockout   *prometheus.Desc
	pending   *prometheus.Desc
	failed    *prometheus.Desc
	outbox    *prometheus.Desc
	lagDesc   *prometheus.Desc
}

// Suspension reasons reported as labels; any other reason code (the API
// accepts free codes) is reported as "other", and accounts beyond the scan
// bound as "unscanned", so that the labels stay bounded and the values
// add up to the accounts suspended.
var suspendedReasons = []string{rules.ReasonAUPViolation, rules.ReasonAdmin, rules.ReasonLockout, "other", "unscanned"}

// Gauge parts that can fail on their own.
var stateParts = []string{"suspended", "lockout", "notices_pending", "notices_failed", "outbox", "consumer_lag"}

func newStateCollector(s *stateCollector) *stateCollector {
	if s.ttl == 0 {
		s.ttl = 5 * time.Second
	}
	if s.maxScan == 0 {
		s.maxScan = 5000
	}
	if s.timeout == 0 {
		s.timeout = 3 * time.Second
	}
	s.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aupd_state_collect_errors_total",
		Help: "Failures to read a state gauge at scrape time, by gauge; the gauge is left out of that scrape.",
	}, []string{"gauge"})
	for _, p := range stateParts {
		s.errors.WithLabelValues(p)
	}
	s.suspended = prometheus.NewDesc("aupd_accounts_suspended", "Accounts with at least one service suspended now, by the reason of the suspension (aup_violation first); unscanned: beyond the scan bound.", []string{"reason"}, nil)
	s.lockout = prometheus.NewDesc("aupd_accounts_in_lockout", "Accounts in a failed-login lockout now.", nil, nil)
	s.pending = prometheus.NewDesc("aupd_notices_pending", "Abuse notices not yet sent or failed (suspension events the notifier has not finished).", nil, nil)
	s.failed = prometheus.NewDesc("aupd_notices_failed", "Abuse notices that failed permanently within the notice retention.", nil, nil)
	s.outbox = prometheus.NewDesc("aupd_outbox_accounts", "Accounts with account events waiting in their outbox (published by the next flush or sweep).", nil, nil)
	s.lagDesc = prometheus.NewDesc("aupd_consumer_lag", "Verdict consumer lag from JetStream: pending (not yet delivered) and ack_pending (delivered, not yet acked); the last value read while JetStream does not answer.", []string{"kind"}, nil)
	return s
}

// Describe implements prometheus.Collector.
func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.suspended, s.lockout, s.pending, s.failed, s.outbox, s.lagDesc} {
		ch <- d
	}
	s.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	now := s.now()
	if s.metrics == nil || now.Sub(s.at) >= s.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		s.metrics = s.read(ctx, now)
		cancel()
		s.at = now
	}
	ms := s.metrics
	s.mu.Unlock()
	for _, m := range ms {
		ch <- m
	}
	s.errors.Collect(ch)
}

func (s *stateCollector) fail(part string, err error) {
	s.errors.WithLabelValues(part).Inc()
	s.log.Warn("read state gauge", "gauge", part, "err", err)
}

// read reads every gauge once.
func (s *stateCollector) read(ctx context.Context, now time.Time) []prometheus.Metric {
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	if by, err := s.suspendedByReason(ctx); err != nil {
		s.fail("suspended", err)
	} else {
		for _, r := range suspendedReasons {
			gauge(s.suspended, float64(by[r]), r)
		}
	}
	if n, err := s.inLockout(ctx, now); err != nil {
		s.fail("lockout", err)
	} else {
		gauge(s.lockout, float64(n))
	}
	var jsErr error // the readiness checks' last word on JetStream
	if s.lag != nil {
		var lag *consumerLag
		if lag, jsErr = s.lag(); jsErr != nil {
			s.errors.WithLabelValues("consumer_lag").Inc() // the readiness checker logs the loss
		}
		if lag != nil { // kept while JetStream does not answer, so that alerts on it do not go silent
			gauge(s.lagDesc, float64(lag.pending), "pending")
			gauge(s.lagDesc, float64(lag.ackPending), "ack_pending")
		}
	}
	if s.noticeConsumer != nil {
		if jsErr != nil {
			// Not asked: it would wait out the timeout and log at every
			// scrape a loss the readiness checker logged once.
			s.errors.WithLabelValues("notices_pending").Inc()
		} else if cons, err := s.noticeConsumer(ctx); err != nil {
			s.fail("notices_pending", err)
		} else if info, err := cons.Info(ctx); err != nil {
			s.fail("notices_pending", err)
		} else {
			gauge(s.pending, float64(info.NumPending)+float64(info.NumAckPending))
		}
	}
	if s.notices != nil {
		if n, err := s.notices.FailedCount(ctx, now.Add(-s.retention)); err != nil {
			s.fail("notices_failed", err)
		} else {
			gauge(s.failed, float64(n))
		}
	}
	if s.outboxPending != nil {
		if n, err := s.outboxPending(ctx); err != nil {
			s.fail("outbox", err)
		} else {
			gauge(s.outbox, float64(n))
		}
	}
	return out
}

// scan returns up to max members of a set and the set's size.
func (s *stateCollector) scan(ctx context.Context, key string) ([]string, int64, error) {
	total, err := s.rdb.SCard(ctx, key).Result()
	if err != nil || total == 0 {
		return nil, total, err
	}
	var (
		members []string
		cursor  uint64
	)
	for {
		page, next, err := s.rdb.SScan(ctx, key, cursor, "", 500).Result()
		if err != nil {
			return nil, 0, err
		}
		members = append(members, page...)
		cursor = next
		if cursor == 0 || len(members) >= s.maxScan {
			break
		}
	}
	if len(members) > s.maxScan {
		members = members[:s.maxScan]
	}
	return members, total, nil
}

// suspendedByReason reads the suspensions of the accounts in the
// suspended index (up to maxScan of them, in one pipeline).
func (s *stateCollector) suspendedByReason(ctx context.Context) (map[string]int, error) {
	members, total, err := s.scan(ctx, s.prefix+":idx:suspended")
	if err != nil {
		return nil, err
	}
	by := map[string]int{}
	by["unscanned"] = int(total) - len(members)
	if len(members) == 0 {
		return by, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(members))
	for i, a := range members {
		cmds[i] = pipe.HGetAll(ctx, store.AccountKey(s.prefix, a, "s"))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for _, c := range cmds {
		reason := ""
		for k, v := range c.Val() {
			if !strings.HasPrefix(k, "sus:") {
				continue
			}
			r := suspensionReason(v)
			if reason == "" || r == rules.ReasonAUPViolation {
				reason = r
			}
		}
		if reason != "" { // a stale index entry counts nowhere
			by[reason]++
		}
	}
	return by, nil
}

// suspensionReason maps a suspension record to a bounded label.
func suspensionReason(record string) string {
	for _, r := range []string{rules.ReasonAUPViolation, rules.ReasonAdmin, rules.ReasonLockout} {
		if strings.Contains(record, `"reason":"`+r+`"`) {
			return r
		}
	}
	return "other"
}

// inLockout counts the accounts whose lockout has not ended yet (the
// status index keeps an ended lockout until the retention job clears
// it). Accounts beyond the scan bound are counted as in lockout.
func (s *stateCollector) inLockout(ctx context.Context, now time.Time) (int, error) {
	members, total, err := s.scan(ctx, s.prefix+":idx:status:"+string(rules.StatusLockout))
	if err != nil || len(members) == 0 {
		return int(total), err
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(members))
	for i, a := range members {
		cmds[i] = pipe.HMGet(ctx, store.AccountKey(s.prefix, a, "s"), "status", "lockout_until")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, err
	}
	n := int(total) - len(members)
	for _, c := range cmds {
		v := c.Val()
		if len(v) != 2 || v[0] != string(rules.StatusLockout) {
			continue
		}
		until, _ := v[1].(string)
		ms, err := strconv.ParseInt(until, 10, 64)
		if until == "" || err != nil || now.Before(time.UnixMilli(ms)) {
			n++
		}
	}
	return n, nil
}
