package store

import (
	"cmp"
	"context"
	_ "embed"
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

// DecodeOutbox turns an outbox entry into the account event to publish
// and its encoding. Entries are account events (written by Go) or
// crossings' records (written by crossing.lua).
func DecodeOutbox(entry string) (*events.AccountEvent, []byte, error) {
	var ev *events.AccountEvent
	if c, ok, err := decodeCrossing(entry); ok {
		if err != nil {
			return nil, nil, fmt.Errorf("outbox: %w", err)
		}
		ev = c.Event()
	} else {
		ev = new(events.AccountEvent)
		if err := json.Unmarshal([]byte(entry), ev); err != nil {
			return nil, nil, fmt.Errorf("decode outbox entry: %w", err)
		}
		for _, st := range []*events.State{ev.Old, ev.New} {
			if st != nil && st.Suspended == nil {
				st.Suspended = []string{}
			}
		}
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, nil, fmt.Errorf("encode account event: %w", err)
	}
	return ev, data, nil
}

// Settled is an account whose outbox entries were published (or could not
// be decoded: they are dropped, never retried forever).
type Settled struct {
	Account string
	Entries []string               // the entries, as read
	Events  []*events.AccountEvent // the published events, for the indexes
}

//go:embed outbox_pop.lua
var popLua string

var popScript = newScript(popLua)

// Settle removes published entries from their outboxes and updates the
// listing indexes, in one pipelined round trip.
func (s *Store) Settle(ctx context.Context, done []Settled) error {
	if len(done) == 0 {
		return nil
	}
	keys := make([][]string, len(done))
	args := make([][]any, len(done))
	for i, d := range done {
		keys[i] = []string{s.key(d.Account, sufState), s.key(d.Account, sufOutbox)}
		a := make([]any, len(d.Entries))
		for j, e := range d.Entries {
			a[j] = e
		}
		args[i] = a
	}
	cmds, err := s.evalAll(ctx, popScript, keys, args, func(pipe redis.Pipeliner) {
		for _, d := range done {
			for _, ev := range d.Events {
				s.indexInto(ctx, pipe, ev.Account, ev.Company, ev.Old, ev.New)
			}
		}
	})
	if err != nil {
		return err
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return wrap("settle outbox", err)
		}
	}
	return nil
}

// FlushOutbox publishes an account's pending account events in order,
// then removes them and updates the listing indexes. Two processes
// flushing at once publish an event twice with the same message id, which
// JetStream drops. It returns how many it published.
func (s *Store) FlushOutbox(ctx context.Context, address string, pub Publisher) (int, error) {
	raw, err := s.rdb.LRange(ctx, s.key(address, sufOutbox), 0, outboxBatch-1).Result()
	if err != nil {
		return 0, wrap("read outbox", err)
	}
	if len(raw) == 0 {
		return 0, nil
	}
	// Published only once replicas hold the change that queued it: a
	// failover must not take back what the event announces.
	if err := s.barrier.Wait(ctx, address); err != nil {
		return 0, err
	}
	d := Settled{Account: address}
	var bad error
	for _, r := range raw {
		ev, data, err := DecodeOutbox(r)
		if err != nil {
			// Never block an account's outbox on one bad entry.
			d.Entries = append(d.Entries, r)
			bad = fmt.Errorf("outbox of %s: %w", address, err)
			continue
		}
		if err := pub.PublishAccountEvent(ctx, ev, data); err != nil {
			if serr := s.Settle(ctx, []Settled{d}); serr != nil {
				return len(d.Events), serr
			}
			return len(d.Events), fmt.Errorf("publish account event %s: %w", ev.ID, err)
		}
		d.Entries = append(d.Entries, r)
		d.Events = append(d.Events, ev)
	}
	if err := s.Settle(ctx, []Settled{d}); err != nil {
		return len(d.Events), err
	}
	return len(d.Events), bad
}

// Index keys. They are global (one slot each), maintained after the
// account's own atomic change, from the published events; listing reads
// them and then the accounts, so a stale entry is harmless.
func (s *Store) idxCompany(c string) string { return s.prefix + ":idx:company:" + c }
func (s *Store) idxStatus(st string) string { return s.prefix + ":idx:status:" + st }
func (s *Store) idxSuspended() string       { return s.prefix + ":idx:suspended" }
func (s *Store) idxAll() string             { return s.prefix + ":idx:accounts" }

// idxOutbox is the SET of accounts that may have account events waiting
// in their outbox: the sweep reads it instead of scanning the keyspace.
func (s *Store) idxOutbox() string { return s.prefix + ":idx:outbox" }

// idxNear is the ZSET of accounts near their threshold (score: the time of
// the hint, ms), a hint list for the overview pages.
func (s *Store) idxNear() string { return s.prefix + ":idx:near" }

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

// MarkOutbox records accounts whose outbox could not be published now, so
// that the sweep finds them.
func (s *Store) MarkOutbox(ctx context.Context, accounts ...string) error {
	if len(accounts) == 0 {
		return nil
	}
	m := make([]any, len(accounts))
	for i, a := range accounts {
		m[i] = a
	}
	return wrap("index outbox", s.rdb.SAdd(ctx, s.idxOutbox(), m...).Err())
}

// OutboxPending counts the accounts that may have account events waiting
// in their outbox.
func (s *Store) OutboxPending(ctx context.Context) (int64, error) {
	n, err := s.rdb.SCard(ctx, s.idxOutbox()).Result()
	return n, wrap("count outboxes", err)
}

// SweepOutboxes flushes the outboxes that changes or batches left behind
// (a process died between a change and its publish). It reads the outbox
// index, never the keyspace, and carries on past an account that fails;
// it returns how many events it published and the first error. It is a
// periodic safety net, run by one process at a time: changes flush their
// own outbox at once, and a crashed batch's verdicts are redelivered and
// flush it then.
func (s *Store) SweepOutboxes(ctx context.Context, pub Publisher) (int, error) {
	var (
		cur   uint64
		total int
		first error
	)
	for {
		accts, next, err := s.rdb.SScan(ctx, s.idxOutbox(), cur, "", 200).Result()
		if err != nil {
			return total, wrap("scan outbox index", err)
		}
		for _, a := range accts {
			n, err := s.FlushOutbox(ctx, a, pub)
			total += n
			if err != nil {
				first = cmp.Or(first, err)
				continue
			}
			// Off the index once empty; an entry written meanwhile puts
			// it back (its writer indexes it before writing).
			if err := s.rdb.SRem(ctx, s.idxOutbox(), a).Err(); err != nil {
				first = cmp.Or(first, wrap("unindex outbox", err))
				continue
			}
			if left, err := s.rdb.LRange(ctx, s.key(a, sufOutbox), 0, 0).Result(); err == nil && len(left) > 0 {
				_ = s.MarkOutbox(ctx, a)
			}
		}
		if next == 0 {
			return total, first
		}
		cur = next
	}
}
