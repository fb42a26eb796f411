package notifier

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log destination for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSMTPOutageWarnsOncePerInterval: while the SMTP server is down, five
// notices are each retried several times, and the log says so once per
// interval, not once per notice and retry.
func TestSMTPOutageWarnsOncePerInterval(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	_ = l.Close() // connection refused from now on
	cfg := testConfig(atoi(t, port))
	stream, err := e.js.Stream(context.Background(), "AUP_VERDICTS")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	n, err := New(cfg, Options{
		Redis: e.rdb, KeyPrefix: e.prefix, JetStream: e.js, Samples: StreamSamples{Stream: stream},
		Directory: e.dir, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	const notices = 5
	var accounts []string
	for i := range notices {
		ev := testSuspension(fmt.Sprintf("user%d@example.com", i), "example", time.Now(), nil)
		e.publishEvent(ev)
		accounts = append(accounts, ev.Account+" "+ev.Suspension.ID)
	}
	waitFor(t, waitLong, "three failed attempts of every notice", func() bool {
		for _, a := range accounts {
			acc, id, _ := strings.Cut(a, " ")
			if e.delivery(n, acc, id).Attempts < 3 {
				return false
			}
		}
		return true
	})
	got := strings.Count(logs.String(), "abuse notice not sent, will retry")
	t.Logf("%d attempts or more, %d warning lines", 3*notices, got)
	if got != 1 {
		t.Errorf("%d warnings of the failed sends in one interval, want 1:\n%s", got, logs.String())
	}
}
