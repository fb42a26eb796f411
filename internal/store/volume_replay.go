package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/rules"
)

// The replay's reading of the volume records that volume.lua writes
// (docs/redis.md, "Volume"). It writes nothing.

// Rings returns the rings of the limits, in the order the volume record
// keeps them.
func (v *VolumeLimits) Rings() []rules.VolumeRing {
	n := int(v.packed[3])
	out := make([]rules.VolumeRing, 0, n)
	for i := range n {
		p := 5 + 5*i
		r := rules.VolumeRing{Window: time.Duration(binary.BigEndian.Uint32(v.packed[p:])) * time.Millisecond * rules.VolumeBuckets,
			Kind: rules.VolumeRecipients}
		if v.packed[p+4] == 1 {
			r.Kind = rules.VolumeMessages
		}
		out = append(out, r)
	}
	return out
}

// VolumeRecord is an account's volume record as a replay reads it.
type VolumeRecord struct {
	Account string
	// Now is the clock of the read: Redis's (or the store's pinned one),
	// the clock the record was counted by.
	Now time.Time
	// Last is when the record last counted a message.
	Last time.Time
	// Rings are the record's rings, in the order of the limits it was
	// read with (VolumeLimits.Rings), with their buckets as of Now.
	// OtherLimits: the record was counted for rings other than those of
	// the limits (their windows changed since; the next message starts
	// its counts afresh), and Rings is nil.
	Rings       []VolumeRingRecord
	OtherLimits bool
	// Throttle is a throttle in force at Now, if any.
	Throttle *Throttle
}

// VolumeRingRecord is one ring of a volume record: its buckets, from the
// oldest one the record keeps to the one that holds the read's now.
type VolumeRingRecord struct {
	rules.VolumeRing
	Series rules.VolumeSeries
}

// volumeNode is a Redis server that can be scanned: the store's client,
// or one master of a Cluster.
type volumeNode interface {
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
	Time(ctx context.Context) *redis.TimeCmd
}

// scanPage is how many keys one SCAN asks for.
const scanPage = 1000

// ScanVolume walks every volume record under the store's prefix (SCAN,
// on every master of a Redis Cluster, one page at a time) and reads the
// records of the accounts that limits gives limits for (nil: skip the
// account), with the clock of the Redis server that holds them. fn gets
// each page's records; an error it returns ends the walk. A record may
// be met twice (SCAN's guarantee), or change while the walk goes on.
func (s *Store) ScanVolume(ctx context.Context, limits func(account string) *VolumeLimits, fn func([]VolumeRecord) error) error {
	nodes, err := s.volumeNodes(ctx)
	if err != nil {
		return err
	}
	match := globEscape(s.prefix) + ":{*}:" + sufVolume
	for _, n := range nodes {
		var cur uint64
		for {
			keys, next, err := n.Scan(ctx, cur, match, scanPage).Result()
			if err != nil {
				return wrap("scan volume records", err)
			}
			recs, err := s.readVolume(ctx, n, keys, limits)
			if err != nil {
				return err
			}
			if len(recs) > 0 {
				if err := fn(recs); err != nil {
					return err
				}
			}
			if cur = next; cur == 0 {
				break
			}
		}
	}
	return nil
}

// volumeNodes are the servers to scan: the masters of a Cluster, or the
// one server.
func (s *Store) volumeNodes(ctx context.Context) ([]volumeNode, error) {
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		var mu sync.Mutex
		var nodes []volumeNode
		err := c.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
			mu.Lock()
			nodes = append(nodes, m)
			mu.Unlock()
			return nil
		})
		if err != nil {
			return nil, wrap("scan volume records", err)
		}
		return nodes, nil
	case volumeNode:
		return []volumeNode{c}, nil
	}
	return nil, fmt.Errorf("scan volume records: a %T cannot scan", s.rdb)
}

// readVolume reads the records of keys whose accounts have limits, and
// their throttles, with one round trip, by the clock of node, the
// server that holds them.
func (s *Store) readVolume(ctx context.Context, node volumeNode, keys []string, limits func(string) *VolumeLimits) ([]VolumeRecord, error) {
	type item struct {
		account  string
		lim      *VolumeLimits
		rec, thr *redis.StringCmd
	}
	var items []item
	pipe := s.rdb.Pipeline()
	for _, k := range keys {
		a, ok := s.volumeAccount(k)
		if !ok {
			continue
		}
		lim := limits(a)
		if lim == nil || len(lim.Policy.Limits) == 0 {
			continue
		}
		items = append(items, item{account: a, lim: lim, rec: pipe.Get(ctx, k), thr: pipe.Get(ctx, s.key(a, sufThrottle))})
	}
	if len(items) == 0 {
		return nil, nil
	}
	now := s.now()
	if !s.pinned {
		t, err := node.Time(ctx).Result()
		if err != nil {
			return nil, wrap("read volume records", err)
		}
		now = t
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, wrap("read volume records", err)
	}
	out := make([]VolumeRecord, 0, len(items))
	for _, it := range items {
		raw, err := it.rec.Bytes()
		if errors.Is(err, redis.Nil) {
			continue // gone since the scan: expired, or reset by a reinstatement
		}
		if err != nil {
			return nil, wrap("read volume records", err)
		}
		r := decodeVolume(raw, it.lim, now)
		r.Account = it.account
		if th, err := it.thr.Result(); err == nil {
			r.Throttle = parseThrottle(th, now)
		}
		out = append(out, r)
	}
	return out, nil
}

// volumeAccount returns the account of a volume record's key.
func (s *Store) volumeAccount(key string) (string, bool) {
	a, ok := strings.CutPrefix(key, s.prefix+":{")
	if !ok {
		return "", false
	}
	a, ok = strings.CutSuffix(a, "}:"+sufVolume)
	return a, ok && a != ""
}

// volHead is the length of the record's head (volume.lua's HEAD): ring
// sum, limit sum, the last count's time, above, six message ids.
const volHead = 8 + 4*6

// decodeVolume reads a record, counted by the rings of lim, as of now.
// Each ring's series runs from the oldest bucket it keeps (the eleventh
// before the last count's) to the one that holds now: as volume.lua
// moves a ring to now before it counts, the buckets after the last
// count's are empty, and a clock that went back counts in the last
// count's bucket.
func decodeVolume(rec []byte, lim *VolumeLimits, now time.Time) VolumeRecord {
	rings := lim.Rings()
	r := VolumeRecord{Now: now}
	if len(rec) < volHead+2*rules.VolumeBuckets*len(rings) || rec[0] != lim.packed[0] || rec[1] != lim.packed[1] {
		r.OtherLimits = true
		return r
	}
	be := binary.BigEndian
	last := int64(be.Uint32(rec[3:])) * 1000
	r.Last = time.UnixMilli(last).UTC()
	nowMS := now.UnixMilli()
	for i, ring := range rings {
		g := ring.Bucket().Milliseconds()
		n, l := nowMS/g, last/g
		n = max(n, l)
		first := l - (rules.VolumeBuckets - 1)
		s := rules.VolumeSeries{From: time.UnixMilli(first * g).UTC(), Width: ring.Bucket(), Current: int(n - first),
			Buckets: make([]int, rules.VolumeBuckets)}
		slots := rec[volHead+2*rules.VolumeBuckets*i:]
		for j := range s.Buckets {
			k := ((first+int64(j))%rules.VolumeBuckets + rules.VolumeBuckets) % rules.VolumeBuckets
			s.Buckets[j] = int(be.Uint16(slots[2*k:]))
		}
		r.Rings = append(r.Rings, VolumeRingRecord{VolumeRing: ring, Series: s})
	}
	return r
}

// parseThrottle reads a throttle ("<until ms> <limit name>"), nil unless
// it holds at now.
func parseThrottle(v string, now time.Time) *Throttle {
	ms, name, ok := strings.Cut(v, " ")
	until, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || until <= now.UnixMilli() {
		return nil
	}
	return &Throttle{Limit: name, Until: time.UnixMilli(until).UTC()}
}

// globEscape escapes the characters that a SCAN pattern gives a meaning.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}
