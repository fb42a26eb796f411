package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/internal/testutil"
)

// stopPublishers is how many events each publisher of
// TestStopKeepsWhatNATSReceived sends. AUPD_STOP_EVENTS=100000 gives the
// figure of the original finding; it takes about 5 minutes under -race on
// a busy 2-core machine (20,000 take under one, and lost 3,165 events with
// the old stop).
const stopPublishers = 20_000

// TestStopKeepsWhatNATSReceived stops aupd (embedded NATS) while a
// core-NATS publisher and a JetStream publisher are sending, restarts it
// on the same data directory, and checks what docs/events.md promises:
// every event whose PubAck the JetStream publisher saw is stored and
// counted; every event the core-NATS publisher had flushed before the stop
// was received by the server and so is stored too (the embedded server
// stores what it received before it shuts down); and every stored event is
// counted exactly once.
func TestStopKeepsWhatNATSReceived(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes and counts many events")
	}
	n := stopPublishers
	if s := os.Getenv("AUPD_STOP_EVENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	const accounts = 500
	_, prefix := testutil.Redis(t)
	cfg := testConfig(t, "", prefix)
	cfg.NATS.Embedded.Listen = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg.Policy.Postfix.Listen, cfg.Policy.Dovecot.Listen = "", ""
	cfg.Companies = nil
	cfg.AUP.Threshold = 1_000_000 // counting only: no suspension, no notice
	cfg.NATS.Consumer.MaxWait = 100 * time.Millisecond
	url := "nats://" + cfg.NATS.Embedded.Listen

	runAupd := func() (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan Info, 1)
		done := make(chan error, 1)
		go func() { done <- Run(ctx, Options{Config: cfg, OnReady: func(i Info) { ready <- i }}) }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("aupd exited: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("aupd did not start")
		}
		return cancel, done
	}
	cancel, done := runAupd()
	now := time.Now()
	event := func(kind string, i int) []byte {
		return verdict(fmt.Sprintf("%s-%d", kind, i), "outbound", fmt.Sprintf("user%d@example.org", i%accounts), "spam", now)
	}

	// The JetStream publisher: asynchronous publishes with the event id as
	// Nats-Msg-Id; an event counts as acknowledged when its PubAck came.
	jsConn, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer jsConn.Close()
	js, err := jetstream.New(jsConn, jetstream.WithPublishAsyncTimeout(10*time.Second), jetstream.WithPublishAsyncMaxPending(4000))
	if err != nil {
		t.Fatal(err)
	}
	stopJS := make(chan struct{})
	var futures []jetstream.PubAckFuture
	jsDone := make(chan struct{})
	go func() {
		defer close(jsDone)
		for i := range n {
			select {
			case <-stopJS:
				return
			default:
			}
			m := nats.NewMsg("aup.verdict.outbound")
			m.Data = event("js", i)
			m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("js-%d", i))
			f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second))
			if err != nil {
				return // aupd is stopping: the rest is not acknowledged
			}
			futures = append(futures, f)
		}
	}()

	// The core-NATS publisher: plain publishes, then a flush; aupd is
	// stopped as soon as the flush succeeds, while the stream is still
	// storing.
	core, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := core.Publish("aup.verdict.outbound", event("core", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := core.FlushTimeout(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("aupd: %v", err)
	}
	close(stopJS)
	<-jsDone
	acked := map[string]bool{}
	for i, f := range futures {
		select {
		case <-f.Ok():
			acked[fmt.Sprintf("js-%d", i)] = true
		case <-f.Err():
		case <-time.After(15 * time.Second):
			t.Fatalf("PubAck future %d never resolved", i)
		}
	}
	core.Close()
	jsConn.Close()

	// Restart on the same data directory and let it count the rest.
	cancel, done = runAupd()
	defer func() { cancel(); <-done }()
	h := &harness{t: t, cfg: cfg, js: testutil.JetStream(t, url)}
	h.drainedWithin(10 * time.Minute) // 2n events; slow under -race on a busy machine

	stored := storedIDs(t, h.js, cfg.NATS.Verdicts.Name)
	var coreStored, jsStored int
	for id := range stored {
		if id[:3] == "js-" {
			jsStored++
		} else {
			coreStored++
		}
	}
	for id := range acked {
		if !stored[id] {
			t.Errorf("acknowledged event %s is not in the stream", id)
		}
	}
	rdb, _ := testutil.Redis(t)
	pipe := rdb.Pipeline()
	reads := make([]func() ([]string, error), accounts)
	for a := range accounts {
		reads[a] = store.QueueWindowMembers(context.Background(), pipe, prefix, fmt.Sprintf("user%d@example.org", a))
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	counted := 0
	for _, read := range reads {
		m, err := read()
		if err != nil {
			t.Fatal(err)
		}
		counted += len(m)
	}
	t.Logf("per publisher %d; JetStream: published %d, acknowledged %d, stored %d; core NATS: flushed %d, stored %d (lost %d); counted %d",
		n, len(futures), len(acked), jsStored, n, coreStored, n-coreStored, counted)
	if counted != len(stored) {
		t.Errorf("counted %d events, the stream holds %d distinct ones", counted, len(stored))
	}
	if coreStored != n {
		t.Errorf("core NATS: %d of %d flushed events stored; the embedded server dropped what it had received", coreStored, n)
	}
}

// storedIDs reads every event id in a stream with an ordered consumer.
func storedIDs(t *testing.T, js jetstream.JetStream, stream string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for read := uint64(0); read < info.State.Msgs; {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			var ev struct{ ID string }
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			ids[ev.ID] = true
			got++
		}
		if got == 0 {
			t.Fatalf("read %d of %d messages", read, info.State.Msgs)
		}
		read += uint64(got)
	}
	return ids
}
