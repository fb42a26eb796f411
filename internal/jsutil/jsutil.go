// Package jsutil holds JetStream helpers shared by the consumer and the
// wiring.
package jsutil

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrAckTimeout is a publish whose ack did not come in time.
var ErrAckTimeout = errors.New("timed out waiting for the JetStream ack")

// PublishAll publishes every message asynchronously, then waits once, at
// most timeout in all, for their acks. It returns one error per message:
// nil when JetStream stored it.
func PublishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, timeout time.Duration) []error {
	errs := make([]error, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		futures[i], errs[i] = js.PublishMsgAsync(m)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = err
		case <-t.C:
			errs[i] = ErrAckTimeout
			// every later one waits no more either
			for j := i + 1; j < len(futures); j++ {
				if futures[j] == nil {
					continue
				}
				select {
				case <-futures[j].Ok():
				case err := <-futures[j].Err():
					errs[j] = err
				default:
					errs[j] = ErrAckTimeout
				}
			}
			return errs
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
	}
	return errs
}
