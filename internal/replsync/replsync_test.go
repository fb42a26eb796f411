package replsync_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/replsync"
	"github.com/aupd/aupd/internal/testutil"
)

func TestWaitCoversWritesOfOtherConnections(t *testing.T) {
	ctx := context.Background()
	master, replica := testutil.RedisPair(t)
	b := replsync.New(master, "t", 1, 2*time.Second)
	for i := range 20 {
		// Written on the pool's connections, not the barrier's.
		val := time.Now().String()
		if err := master.Set(ctx, "k", val, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := b.Wait(ctx, "acct"); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		// The replica acknowledged an offset past the write: it holds it
		// now, not eventually.
		if got, err := replica.Get(ctx, "k").Result(); err != nil || got != val {
			t.Fatalf("round %d: replica has %q (%v), want %q", i, got, err, val)
		}
	}
}

func TestWaitReportsAStalledReplica(t *testing.T) {
	ctx := context.Background()
	master, replica := testutil.RedisPair(t)
	b := replsync.New(master, "t", 1, 300*time.Millisecond)
	// The replica stays connected but applies nothing until resumed.
	resume := testutil.Freeze(t, replica)
	if err := master.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	err := b.Wait(ctx, "acct")
	var short *replsync.ShortError
	if !errors.As(err, &short) || short.Got != 0 || short.Replicas != 1 {
		t.Fatalf("Wait during a stalled replica = %v, want a ShortError with 0 of 1", err)
	}
	resume()
	// Once the replica catches up, the same writes are covered.
	b = replsync.New(master, "t", 1, 3*time.Second)
	if err := b.Wait(ctx, "acct"); err != nil {
		t.Fatalf("Wait after the stall: %v", err)
	}
	if got, _ := replica.Get(ctx, "k").Result(); got != "v" {
		t.Fatalf("replica has %q after the barrier", got)
	}
}

func TestWaitWithoutReplicas(t *testing.T) {
	ctx := context.Background()
	lone := testutil.PrivateRedis(t)
	err := replsync.New(lone, "t", 1, 100*time.Millisecond).Wait(ctx, "acct")
	var short *replsync.ShortError
	if !errors.As(err, &short) || short.Got != 0 {
		t.Fatalf("Wait on a master with no replica = %v, want a ShortError", err)
	}
	// Off: waits for nothing, and writes nothing.
	if b := replsync.New(lone, "off", 0, time.Second); b != nil || b.Wait(ctx, "acct") != nil || b.Replicas() != 0 {
		t.Fatal("a barrier with 0 replicas must be nil and wait for nothing")
	}
	if n, _ := lone.Exists(ctx, "off:sync").Result(); n != 0 {
		t.Fatal("the off barrier wrote a marker")
	}
}
