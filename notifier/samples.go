package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/aupd/aupd/internal/events"
)

// SampleSource returns the verdict events a suspension names as samples.
// Samples that no longer exist are left out without an error; an error
// means the source could not be asked (the notice is retried).
type SampleSource interface {
	Samples(ctx context.Context, seqs []uint64) ([]*events.Verdict, error)
}

// streamGetter is the part of a jetstream.Stream that StreamSamples uses.
type streamGetter interface {
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
}

// StreamSamples reads samples from the verdict stream by sequence number.
type StreamSamples struct {
	Stream streamGetter // a jetstream.Stream
}

// Samples implements SampleSource. A sequence number that is gone (expired
// or deleted) or whose message does not decode as a verdict is skipped.
func (s StreamSamples) Samples(ctx context.Context, seqs []uint64) ([]*events.Verdict, error) {
	out := make([]*events.Verdict, 0, len(seqs))
	for _, seq := range seqs {
		m, err := s.Stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get verdict %d: %w", seq, err)
		}
		var v events.Verdict
		if err := json.Unmarshal(m.Data, &v); err != nil {
			continue
		}
		out = append(out, &v)
	}
	return out, nil
}
