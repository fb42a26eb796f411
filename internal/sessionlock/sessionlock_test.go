package sessionlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/testutil"

	"github.com/redis/go-redis/v9"
)

func testRedis(t testing.TB) (*redis.Client, string) { return testutil.Redis(t) }

// clock is a settable clock that starts at the real time, because lock
// keys expire at absolute (Redis) times.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newLocks(t testing.TB, cfg Config) (*Locks, *clock, *redis.Client) {
	t.Helper()
	rdb, prefix := testRedis(t)
	cfg.KeyPrefix = prefix
	clk := &clock{t: time.Now().Truncate(time.Millisecond)}
	l, err := New(rdb, cfg, Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return l, clk, rdb
}

const mbox = "alice@example.test"

func TestModes(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		held  []Protocol
		want  Protocol
		inUse bool
	}{
		{nil, POP3, false},
		{nil, IMAP, false},
		{[]Protocol{POP3}, POP3, true},
		{[]Protocol{POP3}, IMAP, true},
		{[]Protocol{POP3}, Webmail, true},
		{[]Protocol{IMAP}, POP3, true},
		{[]Protocol{Webmail}, POP3, true},
		{[]Protocol{IMAP}, IMAP, false},
		{[]Protocol{IMAP, Webmail}, Webmail, false},
		{[]Protocol{IMAP, Webmail, IMAP}, POP3, true},
	}
	for _, tt := range tests {
		name := fmt.Sprint(tt.held)
		t.Run(name+"->"+string(tt.want), func(t *testing.T) {
			l, _, _ := newLocks(t, Config{})
			for _, p := range tt.held {
				if _, err := l.Acquire(ctx, mbox, p, 0, "held"); err != nil {
					t.Fatalf("acquire held %s: %v", p, err)
				}
			}
			lk, err := l.Acquire(ctx, mbox, tt.want, 0, "new")
			if tt.inUse {
				if !errors.Is(err, ErrInUse) || err.Error() != "[IN-USE] Mailbox locked" {
					t.Fatalf("got %+v, %v; want ErrInUse", lk, err)
				}
				return
			}
			if err != nil || lk.Mode != tt.want.Mode() {
				t.Fatalf("got %+v, %v", lk, err)
			}
		})
	}
	// Another mailbox is independent.
	l, _, _ := newLocks(t, Config{})
	if _, err := l.Acquire(ctx, mbox, POP3, 0, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, "bob@example.test", POP3, 0, ""); err != nil {
		t.Errorf("bob: %v", err)
	}
}

func TestLeaseExpiresAndRenew(t *testing.T) {
	ctx := context.Background()
	l, clk, rdb := newLocks(t, Config{})
	pop, err := l.Acquire(ctx, mbox, POP3, 30*time.Second, "pop1")
	if err != nil {
		t.Fatal(err)
	}
	if !pop.ExpiresAt.Equal(clk.now().Add(30 * time.Second)) {
		t.Errorf("expires %s", pop.ExpiresAt)
	}
	// The keys expire with the lease in Redis too.
	if ttl := rdb.PTTL(ctx, l.keys(mbox)[0]).Val(); ttl <= 0 || ttl > 31*time.Second {
		t.Errorf("key ttl %s", ttl)
	}
	clk.add(20 * time.Second)
	if _, err := l.Acquire(ctx, mbox, IMAP, 0, ""); !errors.Is(err, ErrInUse) {
		t.Fatalf("imap during pop: %v", err)
	}
	renewed, err := l.Renew(ctx, mbox, pop.ID, 30*time.Second)
	if err != nil || !renewed.ExpiresAt.Equal(clk.now().Add(30*time.Second)) || renewed.Protocol != POP3 || renewed.Holder != "pop1" || renewed.Mode != Exclusive {
		t.Fatalf("renew: %+v, %v", renewed, err)
	}
	clk.add(25 * time.Second) // 45s after acquire, 25s after renew
	if _, err := l.Acquire(ctx, mbox, IMAP, 0, ""); !errors.Is(err, ErrInUse) {
		t.Fatalf("imap after renew: %v", err)
	}
	clk.add(5 * time.Second) // the renewed lease ends: a crashed client
	imap, err := l.Acquire(ctx, mbox, IMAP, 0, "")
	if err != nil {
		t.Fatalf("imap after expiry: %v", err)
	}
	// The expired holder cannot renew; it must acquire again.
	if _, err := l.Renew(ctx, mbox, pop.ID, 0); !errors.Is(err, ErrNotHeld) {
		t.Errorf("renew expired: %v", err)
	}
	locks, err := l.List(ctx, mbox)
	if err != nil || len(locks) != 1 || locks[0].ID != imap.ID || locks[0].Protocol != IMAP || !locks[0].ExpiresAt.Equal(imap.ExpiresAt) {
		t.Errorf("list: %+v, %v", locks, err)
	}
}

func TestRelease(t *testing.T) {
	ctx := context.Background()
	l, _, _ := newLocks(t, Config{})
	a, _ := l.Acquire(ctx, mbox, IMAP, 0, "")
	b, _ := l.Acquire(ctx, mbox, Webmail, 0, "")
	if ok, err := l.Release(ctx, mbox, a.ID); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	if _, err := l.Acquire(ctx, mbox, POP3, 0, ""); !errors.Is(err, ErrInUse) {
		t.Fatalf("pop with webmail held: %v", err)
	}
	if ok, _ := l.Release(ctx, mbox, a.ID); ok {
		t.Error("released twice")
	}
	if ok, err := l.Release(ctx, mbox, "garbage"); ok || err != nil {
		t.Errorf("release garbage: %v %v", ok, err)
	}
	l.Release(ctx, mbox, b.ID)
	if _, err := l.Acquire(ctx, mbox, POP3, 0, ""); err != nil {
		t.Fatalf("pop after release: %v", err)
	}
}

func TestLeaseBoundsAndHolders(t *testing.T) {
	ctx := context.Background()
	l, clk, _ := newLocks(t, Config{MaxHolders: 2})
	// Leases outside the limits are refused, not silently clamped.
	for _, d := range []time.Duration{time.Hour, 30*time.Minute + time.Second, time.Millisecond, 4 * time.Second, -time.Second} {
		if _, err := l.Acquire(ctx, mbox, IMAP, d, ""); !errors.Is(err, ErrLease) || !strings.Contains(err.Error(), "5s to 30m0s") {
			t.Errorf("lease %s: %v; want ErrLease naming the limits", d, err)
		}
	}
	lk, err := l.Acquire(ctx, mbox, IMAP, 30*time.Minute, "")
	if err != nil || !lk.ExpiresAt.Equal(clk.now().Add(30*time.Minute)) {
		t.Errorf("the longest lease: %v, %v", lk, err)
	}
	if _, err := l.Renew(ctx, mbox, lk.ID, time.Hour); !errors.Is(err, ErrLease) {
		t.Errorf("renew beyond the limit: %v", err)
	}
	lk, err = l.Acquire(ctx, mbox, IMAP, 5*time.Second, "")
	if err != nil || !lk.ExpiresAt.Equal(clk.now().Add(5*time.Second)) {
		t.Errorf("the shortest lease: %v, %v", lk, err)
	}
	if _, err := l.Acquire(ctx, mbox, IMAP, 0, ""); !errors.Is(err, ErrTooManyHolders) {
		t.Errorf("third holder: %v", err)
	}
}

func TestConcurrentPOP3(t *testing.T) {
	ctx := context.Background()
	l, _, _ := newLocks(t, Config{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Acquire(ctx, mbox, POP3, 0, "")
			if err == nil {
				mu.Lock()
				won++
				mu.Unlock()
			} else if !errors.Is(err, ErrInUse) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Errorf("%d POP3 sessions got the exclusive lock", won)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{MinLease: time.Millisecond}, {MaxLease: time.Second, MinLease: 2 * time.Second}, {DefaultLease: time.Hour}, {MaxHolders: -1}} {
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

// --- HTTP API ---.

type apiClient struct {
	t   *testing.T
	srv *httptest.Server
}

func (c apiClient) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			c.t.Fatalf("%s %s: body is not JSON: %v", method, path, err)
		}
	}
	return resp.StatusCode, out
}

func TestHandler(t *testing.T) {
	l, clk, _ := newLocks(t, Config{})
	mux := http.NewServeMux()
	NewHandler(l, nil).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := apiClient{t, srv}
	base := "/api/v1/accounts/Alice@Example.test/session-locks"

	code, pop := c.do("POST", base, `{"protocol":"pop3","lease_seconds":60,"holder":"pop-1"}`)
	if code != http.StatusCreated || pop["mode"] != "exclusive" || pop["account"] != "alice@example.test" || pop["lease_seconds"] != 60.0 {
		t.Fatalf("acquire pop3: %d %v", code, pop)
	}
	id := pop["id"].(string)
	code, body := c.do("POST", base, `{"protocol":"imap"}`)
	if code != http.StatusConflict || body["error"] != "[IN-USE] Mailbox locked" || body["code"] != "in_use" {
		t.Fatalf("acquire imap: %d %v", code, body)
	}
	clk.add(30 * time.Second)
	code, body = c.do("POST", base+"/"+id+"/renew", `{"lease_seconds":90}`)
	if code != http.StatusOK || body["lease_seconds"] != 90.0 || body["id"] != id {
		t.Fatalf("renew: %d %v", code, body)
	}
	code, body = c.do("POST", base+"/"+id+"/renew", ``)
	if code != http.StatusOK || body["lease_seconds"] != 120.0 {
		t.Fatalf("renew with the default lease: %d %v", code, body)
	}
	code, body = c.do("GET", base, "")
	if locks, _ := body["locks"].([]any); code != http.StatusOK || len(locks) != 1 {
		t.Fatalf("list: %d %v", code, body)
	}
	if code, _ = c.do("DELETE", base+"/"+id, ""); code != http.StatusNoContent {
		t.Fatalf("release: %d", code)
	}
	if code, _ = c.do("DELETE", base+"/"+id, ""); code != http.StatusNoContent {
		t.Fatalf("release again: %d", code)
	}
	code, body = c.do("POST", base+"/"+id+"/renew", `{}`)
	if code != http.StatusNotFound || body["code"] != "not_held" {
		t.Fatalf("renew released: %d %v", code, body)
	}
	if code, _ = c.do("POST", base, `{"protocol":"imap"}`); code != http.StatusCreated {
		t.Fatalf("imap after release: %d", code)
	}

	for _, bad := range []struct{ method, path, body string }{
		{"POST", base, `{"protocol":"smtp"}`},
		{"POST", base, `{"protocol":"imap","lease_seconds":-1}`},
		{"POST", base, `{"protocol":"imap","lease_seconds":3600}`},
		{"POST", base, `{"protocol":"imap","lease_seconds":1}`},
		{"POST", base, `{"protocol":"imap","extra":1}`},
		{"POST", base, `not json`},
		{"POST", "/api/v1/accounts/not-an-address/session-locks", `{"protocol":"imap"}`},
	} {
		if code, body := c.do(bad.method, bad.path, bad.body); code != http.StatusBadRequest || (body["code"] != "bad_request" && body["code"] != "bad_lease") {
			t.Errorf("%s %s %s: %d %v", bad.method, bad.path, bad.body, code, body)
		}
	}
}
