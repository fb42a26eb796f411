package postfix

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestTransportLookup(t *testing.T) {
	s := newTestServer(t, Config{}, standardAccounts(), nil)
	for _, tc := range []struct{ req, want string }{
		{"transport closed@example.test", "OK error:5.2.1 Mailbox is closed"},
		{"transport Closed+tag@Example.TEST", "OK error:5.2.1 Mailbox is closed"},
		{"transport norecv@example.test", "OK error:5.2.1 Mailbox is not accepting messages"},
		{"transport maint+x@example.test", "OK retry:4.2.1 Mailbox is temporarily unavailable, try again later"},
		{"transport active@example.test", "NOTFOUND "},
		{"transport locked@example.test", "NOTFOUND "}, // a locked account still receives
		{"transport nobody@example.test", "NOTFOUND "},
		{"transport closed@elsewhere.test", "NOTFOUND "},
		{"transport example.test", "NOTFOUND "},
		{"transport .example.test", "NOTFOUND "},
		{"transport", "NOTFOUND "},
	} {
		if got, _ := s.TransportLookup(context.Background(), tc.req); got != tc.want {
			t.Errorf("%q: %q; want %q", tc.req, got, tc.want)
		}
	}
	s = newTestServer(t, Config{RecipientDelimiter: "none"}, standardAccounts(), nil)
	if got, _ := s.TransportLookup(context.Background(), "transport closed+tag@example.test"); got != "NOTFOUND " {
		t.Errorf("without a delimiter: %q", got)
	}
	f := standardAccounts()
	f.err = io.ErrUnexpectedEOF
	s = newTestServer(t, Config{}, f, nil)
	if got, res := s.TransportLookup(context.Background(), "transport closed@example.test"); got != "TEMP account lookup failed" || res != ResultError {
		t.Errorf("lookup error: %q %s", got, res)
	}
}

func TestTransportProtocol(t *testing.T) {
	s := newTestServer(t, Config{}, standardAccounts(), nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeTransport(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	// Two requests on one connection, written at once.
	if _, err := conn.Write(append(netstring("transport closed@example.test"), netstring("transport active@example.test")...)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"32:OK error:5.2.1 Mailbox is closed,", "9:NOTFOUND ,"} {
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(r, buf); err != nil || string(buf) != want {
			t.Fatalf("reply %q, %v; want %q", buf, err, want)
		}
	}
	// A broken netstring is answered PERM and the connection closed.
	if _, err := io.WriteString(conn, "3:abcX"); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if !strings.HasPrefix(string(rest), "19:PERM protocol error,") {
		t.Errorf("after a bad netstring: %q", rest)
	}
}

func FuzzReadNetstring(f *testing.F) {
	for _, s := range []string{"3:abc,", "0:,", "99999999999:", "3:abcd", ":", "-1:,", "4:a b,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := readNetstring(bufio.NewReader(strings.NewReader(in)), 64)
		if err == nil && !strings.HasPrefix(in, string(netstring(got))) {
			t.Errorf("%q decoded as %q", in, got)
		}
	})
}

// BenchmarkTransportLookup measures one transport map lookup over a
// persistent TCP connection, as Postfix's queue manager makes one per
// recipient (compare BenchmarkRequest, the RCPT-time policy request).
func BenchmarkTransportLookup(b *testing.B) {
	s, err := New(Config{}, standardAccounts(), Options{Now: fixedNow})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeTransport(ctx, ln) }()
	defer func() { cancel(); <-done }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	req := netstring("transport maint+list@example.test")
	want := len(netstring("OK retry:4.2.1 Mailbox is temporarily unavailable, try again later"))
	buf := make([]byte, want)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
	}
}
