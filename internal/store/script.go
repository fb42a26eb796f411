package store

import (
	"context"
	"crypto/sha256"

	"github.com/redis/go-redis/v9"
)

// evalAll runs script once per (keys, args) pair in one pipelined round
// trip with EVALSHA; extra, when set, queues more commands in the same
// round trip (their errors are not reported). Calls that find the script
// missing on their server (NOSCRIPT: a restarted or new node) are
// replayed, and only those, after loading it. The returned commands carry
// each call's result or error.
func (s *Store) evalAll(ctx context.Context, script *redis.Script, keys [][]string, args [][]any, extra func(redis.Pipeliner)) ([]*redis.Cmd, error) {
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
		if extra != nil && attempt == 0 {
			extra(pipe)
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
		if err := s.loadScript(ctx, script, keys, missing); err != nil {
			return nil, wrap("load script", err)
		}
		todo = missing
	}
}

// loadScript loads script where the calls missing found it missing. On a
// Cluster that is the masters of those calls' slots only (a replica just
// promoted has an empty script cache, and loading on every node would fail
// while its old master is down); elsewhere the one server.
func (s *Store) loadScript(ctx context.Context, script *redis.Script, keys [][]string, missing []int) error {
	cc, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return script.Load(ctx, s.rdb).Err()
	}
	done := map[string]bool{}
	for _, i := range missing {
		if len(keys[i]) == 0 {
			continue
		}
		m, err := cc.MasterForKey(ctx, keys[i][0])
		if err != nil {
			return err
		}
		if addr := m.Options().Addr; !done[addr] {
			if err := script.Load(ctx, m).Err(); err != nil {
				return err
			}
			done[addr] = true
		}
	}
	return nil
}

// appendMember appends the 6 bytes an event id is stored as in the
// window: the first 48 bits of its SHA-256. A cryptographic hash keeps
// crafted ids from colliding with another event's id; 48 bits keep the
// window compact, and are the prefix of the 8 bytes aupd v1 stored, so v1
// windows carry over.
func appendMember(buf []byte, id string) []byte {
	sum := sha256.Sum256([]byte(id))
	return append(buf, sum[:6]...)
}

// hashSlot is the Redis Cluster slot of an account's keys: CRC16 (XMODEM)
// of the hash tag, the account, modulo 16384.
func hashSlot(account string) uint16 {
	var crc uint16
	for i := 0; i < len(account); i++ {
		crc ^= uint16(account[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}
