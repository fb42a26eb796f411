package notifier

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// quitHolder is a TCP relay in front of the SMTP server that forwards
// everything until the client sends QUIT, then holds the server's answer
// back until released: the time between the end of DATA and the end of
// the session, made long.
type quitHolder struct {
	ln      net.Listener
	release chan struct{}
	quit    chan struct{}
	once    sync.Once
}

func holdQuit(t *testing.T, upstream string) *quitHolder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	q := &quitHolder{ln: ln, release: make(chan struct{}), quit: make(chan struct{})}
	t.Cleanup(func() { q.open(); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			quitting := make(chan struct{})
			go func() { // server -> client, held once QUIT was sent
				buf := make([]byte, 4096)
				for {
					n, err := s.Read(buf)
					select {
					case <-quitting:
						<-q.release
					default:
					}
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						c.Close()
						return
					}
				}
			}()
			go func() { // client -> server, watching for QUIT
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if strings.EqualFold(strings.TrimSpace(line), "QUIT") {
						close(quitting)
						q.once.Do(func() { close(q.quit) })
					}
					if _, werr := io.WriteString(s, line); werr != nil || err != nil {
						s.Close()
						return
					}
				}
			}()
		}
	}()
	return q
}

func (q *quitHolder) open() {
	select {
	case <-q.release:
	default:
		close(q.release)
	}
}

func (q *quitHolder) port() int {
	_, p, _ := net.SplitHostPort(q.ln.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// TestDeliveryRecordedBeforeQuit: the notice is recorded as sent as soon
// as the server has accepted the message, while QUIT is still unanswered.
func TestDeliveryRecordedBeforeQuit(t *testing.T) {
	e := newEnv(t)
	srv := startSMTP(t, smtpOpts{})
	hold := holdQuit(t, srv.addr)
	cfg := testConfig(hold.port())
	cfg.SMTP.Timeout = 10 * time.Second
	n := e.start(cfg, prometheus.NewRegistry())
	ev := testSuspension("alice@example.com", "example", time.Now(), nil)
	e.publishEvent(ev)
	select {
	case <-hold.quit:
	case <-time.After(waitLong):
		t.Fatal("the client never sent QUIT")
	}
	if d := e.delivery(n, ev.Account, ev.Suspension.ID); d.State != StateSent {
		t.Fatalf("while QUIT is unanswered the notice is %q, want sent", d.State)
	}
	hold.open()
	waitFor(t, waitLong, "consumer settled", func() bool { return e.settled(cfg.Durable) })
	if got := len(srv.messages()); got != 1 {
		t.Fatalf("%d messages, want 1", got)
	}
}
