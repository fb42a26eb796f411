package store

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// sufHamFeed names the key that holds when outbound ham last arrived, by
// any process (Unix ms).
const sufHamFeed = "hamfeed"

// hamFeedScript keeps the latest of the times the processes report and
// returns it (0: none within the key's life).
var hamFeedScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local seen = tonumber(ARGV[1])
if seen > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return seen
end
return cur`)

// HamFeed shares when outbound ham last arrived, for the spam-rate rule,
// which acts only while ham arrives (the worker's hamSilence): seen (Unix
// ms; 0: nothing new) is kept when it is the latest any process reported,
// for ttl; the latest is returned (0: none). Every process then decides
// alike, however the stream spreads the ham among them.
func (s *Store) HamFeed(ctx context.Context, seen int64, ttl time.Duration) (int64, error) {
	v, err := hamFeedScript.Run(ctx, s.rdb, []string{s.prefix + ":" + sufHamFeed}, seen, ttl.Milliseconds()).Int64()
	return v, wrap("ham feed", err)
}
