package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"

	"github.com/redis/go-redis/v9"
)

// evalAll runs script once per (keys, args) pair in one pipelined round
// trip with EVALSHA. Calls that find the script missing on their server
// (NOSCRIPT: a restarted or new node) are replayed, and only those, after
// loading it. The returned commands carry each call's result or error.
func (s *Store) evalAll(ctx context.Context, script *redis.Script, keys [][]string, args [][]any) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(keys))
	todo := make([]int, len(keys))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		for _, i := range todo {
			cmds[i] = script.EvalSha(ctx, pipe, keys[i], args[i]...)
		}
		_, _ = pipe.Exec(ctx) // errors are per command
		var missing []int
		for _, i := range todo {
			if err := cmds[i].Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 || attempt == 1 {
			return cmds, nil
		}
		if err := script.Load(ctx, s.rdb).Err(); err != nil {
			return nil, wrap("load script", err)
		}
		todo = missing
	}
}

// idHash maps an event id to the 8 bytes stored for it. A cryptographic
// hash keeps crafted ids from colliding with another event's id.
func idHash(id string) uint64 {
	sum := sha256.Sum256([]byte(id))
	return binary.BigEndian.Uint64(sum[:8])
}
