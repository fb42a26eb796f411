package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/replsync"
	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/rules"
)

// TestIngestWaitsForTheReplica: with redis.wait_replicas, a batch whose
// writes the replica has not confirmed is not reported done (so its
// verdicts are not acked and its crossing is not published), and the
// redelivery counts nothing twice, returns the crossing's account event
// to publish, and is reported done once the replica holds it.
func TestIngestWaitsForTheReplica(t *testing.T) {
	ctx := context.Background()
	master, replica := testutil.RedisPair(t)
	s := New(master, "aup", WithClock(func() time.Time { return t0 }),
		WithBarrier(replsync.New(master, "aup", 1, 300*time.Millisecond)))
	b := Batch{Account: "alice@example.com", Company: "acme", Threshold: 2, Cap: 100, Action: rules.ActionSuspend,
		Items: []Item{spam("a", t0), spam("b", t0), spam("c", t0)}}
	p := IngestParams{Window: day, Skew: 5 * time.Minute, Now: t0, NewID: func() string { return NewID(t0) }}

	resume := testutil.Freeze(t, replica) // applies nothing until resumed
	res, err := s.Ingest(ctx, []Batch{b}, p)
	if err != nil {
		t.Fatal(err)
	}
	var short *replsync.ShortError
	if !errors.As(res[0].Err, &short) || IsPermanent(res[0].Err) {
		t.Fatalf("unconfirmed batch: err %v, want a transient ShortError", res[0].Err)
	}
	if res[0].Crossing != "" || len(res[0].Pending) != 0 {
		t.Fatalf("an unconfirmed crossing was handed out to publish: %+v", res[0])
	}
	resume()

	// Redelivered until the replica, catching up, confirms.
	for range 20 {
		if res, err = s.Ingest(ctx, []Batch{b}, p); err != nil {
			t.Fatal(err)
		}
		if res[0].Err == nil || !errors.As(res[0].Err, &short) {
			break
		}
	}
	if res[0].Err != nil {
		t.Fatalf("redelivery: %v", res[0].Err)
	}
	if got := outcomes(res[0]); got != "ddd" || res[0].Count != 3 {
		t.Fatalf("redelivery: outcomes %q count %d, want ddd and 3", got, res[0].Count)
	}
	if len(res[0].Pending) != 1 {
		t.Fatalf("redelivery returned %d pending account events, want the crossing's", len(res[0].Pending))
	}
	ev, _, err := DecodeOutbox(res[0].Pending[0])
	if err != nil || ev.Type != "suspended" {
		t.Fatalf("pending entry: %+v %v", ev, err)
	}
	// Confirmed means the replica holds the window and the suspension now.
	if m, _ := WindowMembers(ctx, replica, s.prefix, b.Account); len(m) != 3 {
		t.Fatalf("replica window holds %d events, want 3", len(m))
	}
	if n, _ := replica.LLen(ctx, s.key(b.Account, sufOutbox)).Result(); n != 1 {
		t.Fatalf("replica outbox holds %d entries, want 1", n)
	}
}
