package worker

import (
	"log/slog"
	"sync"
	"time"
)

// limiter logs a warning at most once per interval for each message, and
// says how many it held back, so that an outage writes a few lines rather
// than one per account per retry.
type limiter struct {
	log   *slog.Logger
	every time.Duration

	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

func newLimiter(log *slog.Logger, every time.Duration) *limiter {
	return &limiter{log: log, every: every, last: map[string]time.Time{}, held: map[string]int{}}
}

// Warn logs msg with args unless msg was logged less than the interval ago.
func (l *limiter) Warn(msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.last[msg]) < l.every {
		l.held[msg]++
		l.mu.Unlock()
		return
	}
	held := l.held[msg]
	l.last[msg], l.held[msg] = now, 0
	l.mu.Unlock()
	if held > 0 {
		args = append(args, "repeats_suppressed", held)
	}
	l.log.Warn(msg, args...)
}
