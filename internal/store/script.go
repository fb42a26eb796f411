package store

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// runner is a Lua program the store calls: a script (EVALSHA) or a
// function library (FCALL).
type runner interface {
	// queue queues one call in pipe.
	queue(ctx context.Context, pipe redis.Pipeliner, keys []string, args []any) *redis.Cmd
	// missing reports whether err says the server does not hold it.
	missing(err error) bool
	// load gives it to a server.
	load(ctx context.Context, c redis.Scripter) error
}

// script is a Lua script run by EVALSHA.
type script struct{ *redis.Script }

func newScript(src string) script { return script{redis.NewScript(src)} }

//go:embed refused.lua
var refusedLua string

// newCrossSlotScript makes a script that a Redis Cluster lets touch keys
// of many slots on one node (flagged allow-cross-slot-keys), with
// refused.lua put before src.
func newCrossSlotScript(src string) script {
	return newScript("#!lua flags=allow-cross-slot-keys\n" + refusedLua + src)
}

func (sc script) queue(ctx context.Context, pipe redis.Pipeliner, keys []string, args []any) *redis.Cmd {
	return sc.EvalSha(ctx, pipe, keys, args...)
}

func (sc script) missing(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }

func (sc script) load(ctx context.Context, c redis.Scripter) error { return sc.Load(ctx, c).Err() }

// library is a Redis function library of one function (FUNCTION LOAD,
// Redis 7.0). Its top level runs once, when it is loaded, where a script
// run by EVALSHA runs all of it at every call: for a program of many
// functions, most of a short call's cost. The library and the function
// are named after the code's hash, so that two versions of aupd running
// side by side during an upgrade each call their own; Redis keeps
// libraries in its RDB and AOF files and copies them to replicas.
type library struct{ name, code string }

// newLibrary makes a library of the Lua files parts, the last of which
// registers the function, named by the global-free local FUNCTION the
// library sets before them.
func newLibrary(prefix string, parts ...string) library {
	body := strings.Join(parts, "")
	sum := sha256.Sum256([]byte(body))
	name := prefix + "_" + hex.EncodeToString(sum[:8])
	return library{name: name, code: "#!lua name=" + name + "\nlocal FUNCTION = '" + name + "'\n" + body}
}

func (l library) queue(ctx context.Context, pipe redis.Pipeliner, keys []string, args []any) *redis.Cmd {
	return pipe.FCall(ctx, l.name, keys, args...)
}

func (l library) missing(err error) bool {
	return redis.HasErrorPrefix(err, "Function not found") // (after "ERR ")
}

func (l library) load(ctx context.Context, c redis.Scripter) error {
	err := c.(redis.Cmdable).FunctionLoad(ctx, l.code).Err()
	if err != nil && strings.Contains(err.Error(), "already exists") {
		return nil // loaded meanwhile, by another process
	}
	return err
}

// evalAll calls prog once per (keys, args) pair in one pipelined round
// trip; extra, when set, queues more commands in the same round trip
// (their errors are not reported). Calls that find prog missing on their
// server (a restarted or new node) are replayed, and only those, after
// loading it; if it cannot be loaded there, they fail with that error.
// The returned commands carry each call's result or error.
func (s *Store) evalAll(ctx context.Context, prog runner, keys [][]string, args [][]any, extra func(redis.Pipeliner)) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(keys))
	todo := make([]int, len(keys))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		for _, i := range todo {
			cmds[i] = prog.queue(ctx, pipe, keys[i], args[i])
		}
		if extra != nil && attempt == 0 {
			extra(pipe)
		}
		_, _ = pipe.Exec(ctx) // errors are per command
		var missing []int
		for _, i := range todo {
			if err := cmds[i].Err(); err != nil && prog.missing(err) {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 || attempt == 1 {
			return cmds, nil
		}
		if err := s.loadScript(ctx, prog, keys, missing); err != nil {
			// Those calls fail with it (a replica refuses to load with
			// READONLY: transient), and only those.
			for _, i := range missing {
				cmds[i].SetErr(err)
			}
			return cmds, nil
		}
		todo = missing
	}
}

// call calls prog once, loading it where it is missing (see evalAll).
func (s *Store) call(ctx context.Context, prog runner, keys []string, args ...any) *redis.Cmd {
	cmds, _ := s.evalAll(ctx, prog, [][]string{keys}, [][]any{args}, nil)
	return cmds[0]
}

// loadScript loads prog where the calls missing found it missing. On a
// Cluster that is the masters of those calls' slots only (a replica just
// promoted may lack it, and loading on every node would fail while its
// old master is down); elsewhere the one server.
func (s *Store) loadScript(ctx context.Context, prog runner, keys [][]string, missing []int) error {
	cc, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return prog.load(ctx, s.rdb)
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
			if err := prog.load(ctx, m); err != nil {
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

// libraries are the store's function libraries.
var libraries = []library{ingestScript, volumeScript}

// PruneLibraries deletes the function libraries that other versions of
// aupd loaded (each is named after its code's hash, so an upgrade leaves
// the old ones, which Redis keeps, copies to replicas and walks in every
// Lua garbage collection), on every master of a Redis Cluster. A process
// of another version still running loads its own again on its next call
// (a missing function is loaded where it is called). Returns how many it
// deleted.
func (s *Store) PruneLibraries(ctx context.Context) (int, error) {
	// each library's name, and the start it shares with every other
	// version's (up to the code's hash)
	current, kinds := map[string]bool{}, []string{}
	for _, l := range libraries {
		current[l.name] = true
		kinds = append(kinds, l.name[:strings.LastIndexByte(l.name, '_')+1])
	}
	var n atomic.Int64
	prune := func(ctx context.Context, c redis.Cmdable) error {
		libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: "aupd_*"}).Result()
		if err != nil {
			return err
		}
		for _, l := range libs {
			if current[l.Name] || !slices.ContainsFunc(kinds, func(k string) bool { return strings.HasPrefix(l.Name, k) }) {
				continue
			}
			// deleted meanwhile by another process: gone all the same
			if err := c.FunctionDelete(ctx, l.Name).Err(); err != nil && !redis.HasErrorPrefix(err, "Library not found") {
				return err
			}
			n.Add(1)
		}
		return nil
	}
	var err error
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return prune(ctx, m) })
	case redis.Cmdable:
		err = prune(ctx, c)
	}
	return int(n.Load()), err
}
