package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/ratelog"
)

// redisLogEvery is how often go-redis's own lines may reach the log: it
// writes one per failed dial, about 35 a process in a short outage.
const redisLogEvery = 10 * time.Second

// redisLog receives go-redis's log lines. go-redis keeps its logger in a
// package variable, so it is installed once per process (installRedisLog)
// and forwards to the logger of the aupd that runs now: the last Run that
// started, while it runs (tests run several one after another).
type redisLog struct {
	to atomic.Pointer[ratelog.Limiter]
}

var (
	redisLogger     redisLog
	redisLoggerOnce sync.Once
)

// Printf implements go-redis's logging interface: a WARN line through
// aupd's logger, at most one per redisLogEvery (the others are counted in
// the next one's repeats_suppressed). Without a running aupd the line is
// dropped.
func (l *redisLog) Printf(_ context.Context, format string, v ...any) {
	if to := l.to.Load(); to != nil {
		to.Warn("redis client", "detail", strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
	}
}

// installRedisLog routes go-redis's lines to log until the returned
// function is called.
func installRedisLog(log *slog.Logger) (restore func()) {
	redisLoggerOnce.Do(func() { redis.SetLogger(&redisLogger) })
	lim := ratelog.New(log.With("component", "redis"), redisLogEvery)
	prev := redisLogger.to.Swap(lim)
	return func() { redisLogger.to.CompareAndSwap(lim, prev) }
}

// natsLogOptions log the life of aupd's NATS connection: one line when it
// is lost, one when it is back, one when it is closed, and the
// asynchronous errors (a slow consumer, a permission denied) at most once
// a minute each.
func natsLogOptions(log *slog.Logger) []nats.Option {
	errs := ratelog.New(log, time.Minute)
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // aupd closed it: ClosedHandler says so
			}
			log.Warn("nats disconnected; reconnecting", "err", err, "url", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			log.Info("nats connection closed", "err", nc.LastError())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			errs.Warn("nats asynchronous error", "err", err, "subject", subject)
		}),
	}
}
