package store

import (
	"context"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// SweepOutboxes finds accounts whose outbox still holds events (a process
// died between a change and its publish) and flushes them. It scans every
// master of a Cluster. It is a periodic safety net: changes flush their own
// outbox at once.
func (s *Store) SweepOutboxes(ctx context.Context, pub Publisher) (int, error) {
	match := s.prefix + ":{*}:" + sufOutbox
	var (
		mu       sync.Mutex // ForEachMaster scans masters concurrently
		accounts []string
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, match, 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			open, close := strings.IndexByte(k, '{'), strings.LastIndexByte(k, '}')
			if open >= 0 && close > open {
				mu.Lock()
				accounts = append(accounts, k[open+1:close])
				mu.Unlock()
			}
		}
		return iter.Err()
	}
	var err error
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
	case redis.Cmdable:
		err = scan(ctx, c)
	}
	if err != nil {
		return 0, wrap("scan outboxes", err)
	}
	n := 0
	for _, a := range accounts {
		k, err := s.FlushOutbox(ctx, a, pub)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
