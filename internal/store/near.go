package store

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// writeNear queues the near-threshold hints (account -> time in ms) and
// drops hints older than lo.
func (s *Store) writeNear(ctx context.Context, pipe redis.Pipeliner, near map[string]int64, lo int64) {
	zs := make([]redis.Z, 0, len(near))
	for a, t := range near {
		zs = append(zs, redis.Z{Score: float64(t), Member: a})
	}
	pipe.ZAdd(ctx, s.idxNear(), zs...)
	pipe.ZRemRangeByScore(ctx, s.idxNear(), "-inf", strconv.FormatInt(lo, 10))
}

// NearThreshold lists up to limit accounts whose rolling count was at
// least half their threshold when last seen, newest first. It is a hint
// list: read each account's counts before showing it.
func (s *Store) NearThreshold(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	out, err := s.rdb.ZRevRangeByScore(ctx, s.idxNear(), &redis.ZRangeBy{Min: "-inf", Max: "+inf", Count: int64(limit)}).Result()
	return out, wrap("read near-threshold index", err)
}

// HourlyCounts counts an account's counting events per hour over the last
// window, oldest hour first: bucket i holds the events of
// (now-window+i h, now-window+(i+1) h]. Events at or before the last
// reinstatement no longer count and are left out.
func (s *Store) HourlyCounts(ctx context.Context, account string, window time.Duration, now time.Time) ([]int, error) {
	n := int((window + time.Hour - 1) / time.Hour)
	out := make([]int, n)
	pipe := s.rdb.Pipeline()
	win := queueWindow(ctx, pipe, s.prefix, account)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, wrap("read window", err)
	}
	es, floor := win.entries()
	lo := ms(now) - window.Milliseconds()
	for _, e := range es {
		if e.t <= lo || e.t <= floor {
			continue
		}
		i := int((e.t - lo - 1) / hourMS)
		out[min(i, n-1)]++
	}
	return out, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
