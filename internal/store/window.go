package store

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/rules"
)

// An account's window is a sorted set (key suffix w, its scores on the
// base wb, the state's field, in hours) or, while it holds at most a few
// events, the state's field wi (ingest.lua's INLINE): its own base (4
// bytes, hours), then 10 bytes an event, its member (6 bytes) and its
// score (int32); both big-endian. Scores are (time - base) * 16 + kind. A
// state with wi and no wb has no set (a key left over is ignored); one
// with both has both, when a version before wi counted beside this one.
const (
	fieldInline  = "wi"
	inlineMember = 6
	inlineEntry  = inlineMember + 4
)

// windowRead is an account's window queued on a pipeline: the state's
// base, floor and inline window, and the set.
type windowRead struct {
	st  *redis.SliceCmd
	set *redis.ZSliceCmd
}

func queueWindow(ctx context.Context, pipe redis.Pipeliner, prefix, account string) windowRead {
	return windowRead{
		st:  pipe.HMGet(ctx, AccountKey(prefix, account, sufState), "wb", "floor", fieldInline),
		set: pipe.ZRangeWithScores(ctx, AccountKey(prefix, account, sufWindow), 0, -1),
	}
}

// windowEntry is one event of a window: its member, time (ms) and kind.
type windowEntry struct {
	member string
	t      int64
	kind   rules.Kind
}

// entries decodes the window once the pipeline has run, with every event
// it holds (those that no longer count too: the caller filters), and the
// last reinstatement (ms; 0: none).
func (w windowRead) entries() (es []windowEntry, floor int64) {
	var wb, inline string
	if v := w.st.Val(); len(v) == 3 {
		wb, inline = str(v[0]), str(v[2])
		floor, _ = strconv.ParseInt(str(v[1]), 10, 64)
	}
	if len(inline) >= 4 {
		base := int64(binary.BigEndian.Uint32([]byte(inline[:4]))) * hourMS
		for i := 4; i+inlineEntry <= len(inline); i += inlineEntry {
			sc := int64(int32(binary.BigEndian.Uint32([]byte(inline[i+inlineMember : i+inlineEntry]))))
			es = append(es, windowEntry{member: inline[i : i+inlineMember], t: base + sc>>4, kind: rules.Kind(sc & 15)})
		}
		if wb == "" {
			return es, floor
		}
	}
	base, _ := strconv.ParseInt(wb, 10, 64)
	base *= hourMS
	for _, z := range w.set.Val() {
		sc := int64(z.Score)
		m, _ := z.Member.(string)
		if inline != "" && slices.ContainsFunc(es, func(e windowEntry) bool { return e.member == m }) {
			continue // (in both: the same event)
		}
		es = append(es, windowEntry{member: m, t: base + sc>>4, kind: rules.Kind(sc & 15)})
	}
	return es, floor
}

// err is the first error of the reads, but for a missing key.
func (w windowRead) err() error {
	for _, err := range []error{w.st.Err(), w.set.Err()} {
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// QueueWindowMembers queues on pipe the read of the members of an
// account's window (every member it holds, as ZRANGE lists a set's), and
// returns the function that gives them once the pipeline has run. The
// members are the first 6 bytes of the SHA-256 of the event ids (aupd v1
// wrote 8).
func QueueWindowMembers(ctx context.Context, pipe redis.Pipeliner, prefix, account string) func() ([]string, error) {
	w := queueWindow(ctx, pipe, prefix, account)
	return func() ([]string, error) {
		if err := w.err(); err != nil {
			return nil, err
		}
		es, _ := w.entries()
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.member
		}
		return out, nil
	}
}

// WindowMembers reads the members of an account's window, in one round
// trip (see QueueWindowMembers).
func WindowMembers(ctx context.Context, rdb redis.Cmdable, prefix, account string) ([]string, error) {
	pipe := rdb.Pipeline()
	read := QueueWindowMembers(ctx, pipe, prefix, account)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	return read()
}

// WindowLen is the number of members of an account's window (as ZCARD
// of its set would give it).
func WindowLen(ctx context.Context, rdb redis.Cmdable, prefix, account string) (int64, error) {
	m, err := WindowMembers(ctx, rdb, prefix, account)
	return int64(len(m)), err
}
