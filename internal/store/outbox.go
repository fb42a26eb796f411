package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/internal/events"
)

// Publisher publishes one account event durably (a JetStream publish that
// waited for its ack) with ev.ID as the message id, so that a republish
// after a crash is dropped as a duplicate.
type Publisher interface {
	PublishAccountEvent(ctx context.Context, ev *events.AccountEvent, data []byte) error
}

// outboxBatch bounds how many events one flush reads.
const outboxBatch = 100

// FlushOutbox publishes an account's pending account events in order and
// removes each one once it is published, then updates the listing indexes.
// Two processes flushing at once publish an event twice with the same
// message id, which JetStream drops. It returns how many it published.
func (s *Store) FlushOutbox(ctx context.Context, address string, pub Publisher) (int, error) {
	key := s.key(address, sufOutbox)
	raw, err := s.rdb.LRange(ctx, key, 0, outboxBatch-1).Result()
	if err != nil {
		return 0, wrap("read outbox", err)
	}
	n := 0
	for _, r := range raw {
		var ev events.AccountEvent
		if err := json.Unmarshal([]byte(r), &ev); err != nil {
			// Never block an account's outbox on one bad entry.
			_ = s.rdb.LRem(ctx, key, 1, r).Err()
			return n, fmt.Errorf("decode outbox entry of %s: %w", address, err)
		}
		canonical(&ev)
		data, err := json.Marshal(&ev)
		if err != nil {
			return n, fmt.Errorf("encode account event: %w", err)
		}
		if err := pub.PublishAccountEvent(ctx, &ev, data); err != nil {
			return n, fmt.Errorf("publish account event %s: %w", ev.ID, err)
		}
		if err := s.index(ctx, &ev); err != nil {
			return n, err
		}
		if err := s.rdb.LRem(ctx, key, 1, r).Err(); err != nil {
			return n, wrap("remove published event", err)
		}
		n++
	}
	return n, nil
}

// canonical gives events written by Lua the same shape as Go's.
func canonical(ev *events.AccountEvent) {
	for _, st := range []*events.State{ev.Old, ev.New} {
		if st != nil && st.Suspended == nil {
			st.Suspended = []string{}
		}
	}
}

// Index keys. They are global (one slot each), maintained after the
// account's own atomic change, from the published events; listing reads
// them and then the accounts, so a stale entry is harmless.
func (s *Store) idxCompany(c string) string { return s.prefix + ":idx:company:" + c }
func (s *Store) idxStatus(st string) string { return s.prefix + ":idx:status:" + st }
func (s *Store) idxSuspended() string       { return s.prefix + ":idx:suspended" }
func (s *Store) idxAll() string             { return s.prefix + ":idx:accounts" }

func (s *Store) index(ctx context.Context, ev *events.AccountEvent) error {
	pipe := s.rdb.Pipeline()
	s.indexInto(ctx, pipe, ev.Account, ev.Company, ev.Old, ev.New)
	_, err := pipe.Exec(ctx)
	return wrap("update indexes", err)
}

// indexInto queues the index updates of an account whose state went from
// old to new (new nil: deleted).
func (s *Store) indexInto(ctx context.Context, pipe redis.Pipeliner, account, company string, old, new *events.State) {
	if new == nil {
		pipe.SRem(ctx, s.idxAll(), account)
		pipe.SRem(ctx, s.idxSuspended(), account)
		if company != "" {
			pipe.SRem(ctx, s.idxCompany(company), account)
		}
		if old != nil {
			pipe.SRem(ctx, s.idxStatus(old.Status), account)
		}
		return
	}
	pipe.SAdd(ctx, s.idxAll(), account)
	if company != "" {
		pipe.SAdd(ctx, s.idxCompany(company), account)
	}
	if len(new.Suspended) > 0 {
		pipe.SAdd(ctx, s.idxSuspended(), account)
	} else {
		pipe.SRem(ctx, s.idxSuspended(), account)
	}
	if old != nil && old.Status != new.Status {
		pipe.SRem(ctx, s.idxStatus(old.Status), account)
	}
	if new.Status != "" && new.Status != "active" {
		pipe.SAdd(ctx, s.idxStatus(new.Status), account)
	}
}

// IndexNew records accounts first seen by the worker, in one round trip.
func (s *Store) IndexNew(ctx context.Context, accounts map[string]string) error {
	if len(accounts) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	for acct, company := range accounts {
		pipe.SAdd(ctx, s.idxAll(), acct)
		if company != "" {
			pipe.SAdd(ctx, s.idxCompany(company), acct)
		}
	}
	_, err := pipe.Exec(ctx)
	return wrap("index new accounts", err)
}
