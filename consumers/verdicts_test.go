package consumers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/testutil"
	"github.com/aupd/aupd/worker"
)

func TestStreamSeq(t *testing.T) {
	for _, c := range []struct {
		reply string
		seq   uint64
		ok    bool
	}{
		{"$JS.ACK.V.aupd-worker.1.42.40.1733000000000000000.7", 42, true},
		{"$JS.ACK._.ABCDEF.V.aupd-worker.3.99.98.1733000000000000000.0.tok", 99, true},
		{"$JS.ACK.hub.ABCDEF.V.aupd-worker.3.12345678901.98.1733000000000000000.0", 12345678901, true},
		{"$JS.ACK.V.aupd-worker.1.0.40.1733000000000000000.7", 0, false}, // sequence 0
		{"$JS.ACK.V.aupd-worker.1.x.40.1733000000000000000.7", 0, false}, // not a number
		{"$JS.ACK.V.aupd-worker.1.42.40.1733000000000000000", 0, false},  // 8 tokens
		{"$JS.ACK.a.b.V.c.1.42.40.17.0.t.extra", 0, false},               // 13 tokens
		{"$JS.ACK.a.b.V.c.1.42.40.17", 0, false},                         // 10 tokens
		{"_INBOX.abc.def", 0, false},                                     // not an ack subject
		{"", 0, false},
	} {
		if seq, ok := StreamSeq(c.reply); seq != c.seq || ok != c.ok {
			t.Errorf("StreamSeq(%q) = %d, %v; want %d, %v", c.reply, seq, ok, c.seq, c.ok)
		}
	}
}

// TestStreamSeqMatchesMetadata: on real servers (the current release and
// Debian's 2.9.10) the sequence read from the reply subject is the one
// Metadata reports, for every message.
func TestStreamSeqMatchesMetadata(t *testing.T) {
	testutil.BothNATS(t, streamSeqMatches)
}

func streamSeqMatches(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := testutil.JetStream(t, url)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := js.Publish(ctx, fmt.Sprint("s.", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cons.Fetch(20, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range b.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		seq, ok := StreamSeq(m.Reply())
		if !ok || seq != meta.Sequence.Stream {
			t.Fatalf("reply %q: StreamSeq %d, %v; metadata says %d", m.Reply(), seq, ok, meta.Sequence.Stream)
		}
		n++
	}
	if n != 20 {
		t.Fatalf("%d messages, want 20", n)
	}
}

// countingProcessor accepts every event; the first batch cancels the run.
type countingProcessor struct {
	stop context.CancelFunc
	mu   sync.Mutex
	seen []uint64 // stream sequences, in the order handled
}

func (p *countingProcessor) Process(_ context.Context, evs []worker.Event) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range evs {
		p.seen = append(p.seen, e.Seq)
	}
	p.stop()
	return make([]error, len(evs))
}

// TestStopHandlesRequestedBatch: a loop that requested its next batch
// ahead and is then stopped handles that batch too, and acks it, instead
// of leaving its messages pending until the ack wait; nothing past it is
// fetched (on both servers).
func TestStopHandlesRequestedBatch(t *testing.T) {
	testutil.BothNATS(t, stopHandlesRequested)
}

func stopHandlesRequested(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := testutil.JetStream(t, url)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "V", Subjects: []string{"aup.verdict.>"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	const batch, total = 10, 50
	for i := range total {
		ev := fmt.Sprintf(`{"id":"e%d","time":%q,"direction":"outbound","account":"a%d@example.com","verdict":"spam","source":"t"}`,
			i, now.Format(time.RFC3339), i)
		if _, err := js.Publish(ctx, "aup.verdict.outbound", []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "V", jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	run, stop := context.WithCancel(ctx)
	defer stop()
	p := &countingProcessor{stop: stop}
	v, err := NewVerdicts(VerdictOptions{JS: js, Consumer: cons, Processor: p, Batch: batch, Workers: 1,
		MaxWait: time.Second, RetryMin: time.Second, RetryMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Run(run); err != nil {
		t.Fatal(err)
	}
	// the batch in hand and the one requested ahead, in stream order
	if len(p.seen) != 2*batch {
		t.Fatalf("handled %d events, want %d (the batch in hand and the one requested ahead)", len(p.seen), 2*batch)
	}
	for i, seq := range p.seen {
		if seq != uint64(i+1) {
			t.Fatalf("event %d has stream sequence %d, want %d", i, seq, i+1)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream == 2*batch && info.NumPending == total-2*batch
	}, "the %d handled events are acked and the other %d still wait in the stream", 2*batch, total-2*batch)
}

// TestTransientWinsOverPermanent: an error the worker marks transient is
// redelivered even when the cause it wraps is permanent.
func TestTransientWinsOverPermanent(t *testing.T) {
	var cause error = permanentErr{}
	if !permanent(cause) {
		t.Fatal("an error with Permanent() true is not permanent")
	}
	if err := fmt.Errorf("%w: %w", worker.ErrTransient, cause); permanent(err) {
		t.Fatalf("%v: permanent, want transient", err)
	}
}

type permanentErr struct{}

func (permanentErr) Error() string   { return "ERR script" }
func (permanentErr) Permanent() bool { return true }

// TestFillWaitEndsPartialBatch: a fetch hands on what it has once the
// fill wait has passed, not after max_wait (a minute here), and every
// message it had is acked (on both servers).
func TestFillWaitEndsPartialBatch(t *testing.T) {
	testutil.BothNATS(t, fillWaitEndsPartialBatch)
}

func fillWaitEndsPartialBatch(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, cons := pullStream(ctx, t, url)
	publishN(ctx, t, js, 0, 3)
	run, stop := context.WithCancel(ctx)
	defer stop()
	var batches [][]uint64
	p := &Pull{Consumer: cons, Batch: 100, MaxWait: time.Minute, FillWait: 20 * time.Millisecond,
		Handle: func(msgs []jetstream.Msg) {
			batches = append(batches, ackAll(t, msgs))
			stop()
		}}
	done := make(chan struct{})
	go func() { defer close(done); p.Run(run) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the partial batch was not handled before the test's deadline (a fetch waited for max_wait)")
	}
	if len(batches) != 1 || !slices.Equal(batches[0], []uint64{1, 2, 3}) {
		t.Fatalf("handled %v, want one batch of stream sequences 1-3", batches)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.AckFloor.Stream == 3
	}, "the 3 events are acked")
}

// TestIdleLoopLongPollsOne: after a fetch that brought nothing the loop
// asks for one event with max_wait's long poll, so the first event after
// a pause goes on alone, at once; the next fetch takes the rest of what
// is there (on both servers).
func TestIdleLoopLongPollsOne(t *testing.T) {
	testutil.BothNATS(t, idleLoopLongPollsOne)
}

func idleLoopLongPollsOne(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, cons := pullStream(ctx, t, url)
	run, stop := context.WithCancel(ctx)
	defer stop()
	var batches [][]uint64
	idles := 0
	p := &Pull{Consumer: cons, Batch: 100, MaxWait: time.Minute, FillWait: 5 * time.Millisecond,
		Idle: func() {
			if idles++; idles == 1 {
				publishN(ctx, t, js, 0, 5) // while the loop is idle
			}
		},
		Handle: func(msgs []jetstream.Msg) {
			batches = append(batches, ackAll(t, msgs))
			if len(batches) == 2 {
				stop()
			}
		}}
	done := make(chan struct{})
	go func() { defer close(done); p.Run(run) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("two batches were not handled before the test's deadline; handled %v", batches)
	}
	if idles != 1 {
		t.Fatalf("Idle called %d times, want once (after the first, empty fetch)", idles)
	}
	if len(batches) != 2 || !slices.Equal(batches[0], []uint64{1}) || !slices.Equal(batches[1], []uint64{2, 3, 4, 5}) {
		t.Fatalf("handled %v, want [1] (the long poll of one) and then [2 3 4 5]", batches)
	}
}

// pullStream makes a stream V of aup.verdict.> and a durable consumer on
// it.
func pullStream(ctx context.Context, t *testing.T, url string) (jetstream.JetStream, jetstream.Consumer) {
	t.Helper()
	js := testutil.JetStream(t, url)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "V", Subjects: []string{"aup.verdict.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "V", jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return js, cons
}

// publishN publishes n verdicts, numbered from first.
func publishN(ctx context.Context, t *testing.T, js jetstream.JetStream, first, n int) {
	t.Helper()
	now := time.Now().UTC()
	for i := first; i < first+n; i++ {
		ev := fmt.Sprintf(`{"id":"e%d","time":%q,"direction":"outbound","account":"a%d@example.com","verdict":"spam","source":"t"}`,
			i, now.Format(time.RFC3339), i)
		if _, err := js.Publish(ctx, "aup.verdict.outbound", []byte(ev)); err != nil {
			t.Error(err)
			return
		}
	}
}

// ackAll acks msgs and returns their stream sequences.
func ackAll(t *testing.T, msgs []jetstream.Msg) []uint64 {
	seqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		seq, ok := StreamSeq(m.Reply())
		if !ok {
			t.Errorf("reply subject %q", m.Reply())
		}
		seqs[i] = seq
		if err := m.Ack(); err != nil {
			t.Error(err)
		}
	}
	return seqs
}
