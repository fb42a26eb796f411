package app

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/config"
	"github.com/aupd/aupd/internal/testutil"
)

// TestVerdictConsumerFilter: the verdict consumer filters only when its
// stream holds other subjects too, and a durable created with the filter by
// an earlier release loses it on the next start (NATS 2.9 lets a filter
// change). Both on the current server and on Debian's 2.9.10.
func TestVerdictConsumerFilter(t *testing.T) {
	testutil.BothNATS(t, verdictConsumerFilter)
}

func verdictConsumerFilter(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := testutil.JetStream(t, url)
	cc := config.Default().NATS.Consumer
	filterOf := func(stream string) string {
		t.Helper()
		cons, err := VerdictConsumer(ctx, js, stream, cc)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config.FilterSubject
	}

	// The stream aupd creates: verdicts only, no filter.
	if _, err := EnsureStream(ctx, js, config.Stream{Name: "V1", MaxAge: time.Hour, Replicas: 1, Duplicate: time.Minute}, verdictSubjects); err != nil {
		t.Fatal(err)
	}
	// An earlier release's durable, with the filter: it is dropped.
	if _, err := js.CreateOrUpdateConsumer(ctx, "V1", jetstream.ConsumerConfig{Durable: cc.Durable, FilterSubject: "aup.verdict.>", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if f := filterOf("V1"); f != "" {
		t.Errorf("verdict-only stream: consumer filter %q, want none", f)
	}

	// An operator's stream that also captures other subjects: filtered,
	// and the consumer still receives only verdicts.
	if err := js.DeleteStream(ctx, "V1"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MIXED", Subjects: []string{"aup.verdict.>", "other.>"}}); err != nil {
		t.Fatal(err)
	}
	if f := filterOf("MIXED"); f != "aup.verdict.>" {
		t.Fatalf("mixed stream: consumer filter %q, want aup.verdict.>", f)
	}
	for _, subj := range []string{"other.x", "aup.verdict.outbound"} {
		if _, err := js.Publish(ctx, subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.Consumer(ctx, "MIXED", cc.Durable)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range b.Messages() {
		got = append(got, m.Subject())
	}
	if len(got) != 1 || got[0] != "aup.verdict.outbound" {
		t.Errorf("mixed stream delivered %v, want only aup.verdict.outbound", got)
	}
}
