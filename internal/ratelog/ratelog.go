// Package ratelog keeps repeated warnings to a few lines: an outage should
// write one line per interval, not one per account per retry.
package ratelog

import (
	"log/slog"
	"sync"
	"time"
)

// Limiter logs a warning at most once per interval for each message, and
// says how many it held back. It is safe for concurrent use.
type Limiter struct {
	log   *slog.Logger
	every time.Duration

	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// New returns a Limiter that logs to log at most once per every for each
// message.
func New(log *slog.Logger, every time.Duration) *Limiter {
	return &Limiter{log: log, every: every, last: map[string]time.Time{}, held: map[string]int{}}
}

// Warn logs msg with args unless msg was logged less than the interval ago.
func (l *Limiter) Warn(msg string, args ...any) {
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
