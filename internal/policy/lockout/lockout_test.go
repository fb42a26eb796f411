package lockout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/testutil"

	"github.com/redis/go-redis/v9"
)

// testRedis returns a client of the test Redis and a key prefix of this
// test's own; the prefix's keys are deleted when the test ends.
func testRedis(t testing.TB) (*redis.Client, string) { return testutil.Redis(t) }

// fakeLocker records lockouts; it is the test double of the account store.
type fakeLocker struct {
	mu    sync.Mutex
	calls []lockCall
	err   error
}

type lockCall struct {
	account string
	until   time.Time
	note    string
}

func (f *fakeLocker) Lockout(_ context.Context, account string, until time.Time, note string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.calls = append(f.calls, lockCall{account, until, note})
	return nil
}

func (f *fakeLocker) n() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Millisecond)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newCounter(t *testing.T, cfg Config, l Locker, clk *clock, pol Policies) *Counter {
	t.Helper()
	rdb, prefix := testRedis(t)
	cfg.KeyPrefix = prefix
	c, err := New(rdb, cfg, l, Options{Now: clk.now, Policies: pol})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestThresholdLocksOutOnce(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	l := &fakeLocker{}
	c := newCounter(t, Config{Threshold: 3, Window: time.Minute, Duration: 10 * time.Minute}, l, clk, nil)
	for i := 1; i <= 2; i++ {
		out, err := c.Failure(ctx, "a@example.test", fmt.Sprintf("h%d", i), "imap from 192.0.2.1")
		if err != nil || out.LockedOut || out.Count != i {
			t.Fatalf("failure %d: %+v, %v", i, out, err)
		}
		clk.add(time.Second)
	}
	out, err := c.Failure(ctx, "a@example.test", "h3", "imap from 192.0.2.1")
	if err != nil || !out.LockedOut || out.Count != 3 {
		t.Fatalf("third failure: %+v, %v", out, err)
	}
	if want := clk.now().Add(10 * time.Minute); !out.Until.Equal(want) {
		t.Errorf("until %s, want %s", out.Until, want)
	}
	if l.n() != 1 || l.calls[0].account != "a@example.test" || !l.calls[0].until.Equal(out.Until) {
		t.Fatalf("locker calls %+v", l.calls)
	}
	t.Logf("note: %s", l.calls[0].note)
	// The count started afresh.
	if n, err := c.Count(ctx, "a@example.test"); err != nil || n != 0 {
		t.Errorf("count after lockout = %d, %v", n, err)
	}
	// Other accounts are not affected.
	if n, _ := c.Count(ctx, "b@example.test"); n != 0 {
		t.Errorf("other account count %d", n)
	}
}

func TestSamePasswordCountsOnce(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	l := &fakeLocker{}
	c := newCounter(t, Config{Threshold: 3}, l, clk, nil)
	// A phone retrying an old password, many times.
	for i := 0; i < 20; i++ {
		out, err := c.Failure(ctx, "a@example.test", "0833", "")
		if err != nil || out.Count != 1 || out.LockedOut {
			t.Fatalf("repeat %d: %+v, %v", i, out, err)
		}
		clk.add(10 * time.Second)
	}
	// Failures without a hash each count.
	for i := 2; i <= 3; i++ {
		out, err := c.Failure(ctx, "a@example.test", "", "")
		if err != nil || out.Count != i {
			t.Fatalf("unhashed failure: %+v, %v", out, err)
		}
	}
	if l.n() != 1 {
		t.Errorf("lockouts %d, want 1", l.n())
	}
}

func TestWindowAndSuccessReset(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	l := &fakeLocker{}
	c := newCounter(t, Config{Threshold: 3, Window: time.Minute}, l, clk, nil)
	mustFail := func(hash string, want int) {
		t.Helper()
		out, err := c.Failure(ctx, "a@example.test", hash, "")
		if err != nil || out.Count != want {
			t.Fatalf("failure %s: %+v, %v; want count %d", hash, out, err, want)
		}
	}
	mustFail("h1", 1)
	mustFail("h2", 2)
	clk.add(61 * time.Second) // both fall out of the window
	mustFail("h3", 1)
	if err := c.Success(ctx, "a@example.test"); err != nil {
		t.Fatal(err)
	}
	mustFail("h4", 1)
	mustFail("h5", 2)
	if l.n() != 0 {
		t.Errorf("locked out %d times", l.n())
	}
}

func TestCompanyPolicy(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	l := &fakeLocker{}
	pol := PoliciesFunc(func(_ context.Context, acct string) (Policy, error) {
		switch acct {
		case "strict@example.test":
			return Policy{Threshold: 1, Duration: time.Hour}, nil
		case "broken@example.test":
			return Policy{}, errors.New("store down")
		case "invalid@example.test":
			return Policy{Threshold: -4}, nil
		}
		return Policy{}, nil
	})
	c := newCounter(t, Config{Threshold: 2, Duration: time.Minute}, l, clk, pol)
	out, err := c.Failure(ctx, "strict@example.test", "h", "")
	if err != nil || !out.LockedOut || !out.Until.Equal(clk.now().Add(time.Hour)) {
		t.Fatalf("strict: %+v, %v", out, err)
	}
	if _, err := c.Failure(ctx, "broken@example.test", "h", ""); err == nil {
		t.Error("policy error not reported")
	}
	out, err = c.Failure(ctx, "invalid@example.test", "h", "")
	if err != nil || out.Threshold != 2 {
		t.Errorf("invalid override: %+v, %v; want the provider's threshold", out, err)
	}
}

func TestConcurrentFailuresLockOutOnce(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	l := &fakeLocker{}
	c := newCounter(t, Config{Threshold: 5}, l, clk, nil)
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Failure(ctx, "a@example.test", fmt.Sprintf("h%d", i), ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// 40 distinct failures can trip at most 40/5 lockouts in sequence, but
	// concurrent ones that pass the threshold together trip once.
	if n := l.n(); n < 1 || n > 8 {
		t.Errorf("lockouts %d", n)
	}
}

func TestLockerErrorRetries(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	l := &fakeLocker{err: errors.New("store down")}
	c := newCounter(t, Config{Threshold: 2}, l, clk, nil)
	if _, err := c.Failure(ctx, "a@example.test", "h1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Failure(ctx, "a@example.test", "h2", ""); err == nil {
		t.Fatal("locker error not reported")
	}
	l.mu.Lock()
	l.err = nil
	l.mu.Unlock()
	out, err := c.Failure(ctx, "a@example.test", "h3", "")
	if err != nil || !out.LockedOut {
		t.Fatalf("retry: %+v, %v", out, err)
	}
	if l.n() != 1 {
		t.Errorf("lockouts %d", l.n())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{Threshold: -1}, {Window: time.Millisecond}, {Duration: -time.Second}} {
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}
