package campaign

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/aupd/aupd/internal/store"
)

// member is what aupd stores in a window for an event id: the first 6
// bytes of its SHA-256 (internal/store appendMember; the two must agree).
func member(id string) string {
	sum := sha256.Sum256([]byte(id))
	return string(sum[:6])
}

// windowDiff is how one account's window differs from the counting ids
// published for it.
type windowDiff struct {
	Account string
	Want    int      // counting ids published
	Missing []string // ids published and not in the window: lost
	Extra   []string // members in the window that are no counting id of the account, named where known
}

// diffWindow compares a window's members with want (member -> id, the
// account's counting events); known names other members (the account's
// ham ids, say) in Extra. It returns nil when they agree.
func diffWindow(account string, want map[string]string, got []string, known map[string]string) *windowDiff {
	d := windowDiff{Account: account, Want: len(want)}
	in := make(map[string]bool, len(got))
	for _, m := range got {
		in[m] = true
		if _, ok := want[m]; !ok {
			name := "member " + hex.EncodeToString([]byte(m))
			if k, ok := known[m]; ok {
				name = k
			}
			d.Extra = append(d.Extra, name)
		}
	}
	for m, id := range want {
		if !in[m] {
			d.Missing = append(d.Missing, id)
		}
	}
	if len(d.Missing) == 0 && len(d.Extra) == 0 {
		return nil
	}
	slices.Sort(d.Missing)
	slices.Sort(d.Extra)
	return &d
}

// lost and extra say what differs, with a few of the ids.
func (d *windowDiff) lost() string {
	return fmt.Sprintf("%s: %d of its %d counting ids not in the window: %s", d.Account, len(d.Missing), d.Want, few(d.Missing))
}

func (d *windowDiff) extra() string {
	return fmt.Sprintf("%s: %d window members that are no counting id of it: %s", d.Account, len(d.Extra), few(d.Extra))
}

func few(xs []string) string {
	const n = 4
	if len(xs) <= n {
		return strings.Join(xs, ", ")
	}
	return strings.Join(xs[:n], ", ") + fmt.Sprintf(", ... (%d more)", len(xs)-n)
}

// expectedMembers is, per account of the plan, the members its window
// must hold (member -> event id), and the other ids of it that could
// wrongly be there (its ham events, by member).
func (p *Plan) expectedMembers() (want, other []map[string]string) {
	want = make([]map[string]string, len(p.Accounts))
	other = make([]map[string]string, len(p.Accounts))
	for a := range p.Accounts {
		want[a], other[a] = map[string]string{}, map[string]string{}
	}
	for k := range p.NOrig {
		a := p.orig[k]
		id := p.Original(k).ID
		if a&hamBit != 0 {
			other[a&^hamBit][member(id)] = id + " (ham)"
			continue
		}
		want[a][member(id)] = id
	}
	return want, other
}

// windowMembers reads every account's window (its set, or the state's
// inline window: store.QueueWindowMembers).
func (r *runner) windowMembers(ctx context.Context, accounts []string) ([][]string, error) {
	out := make([][]string, len(accounts))
	for lo := 0; lo < len(accounts); lo += 500 {
		hi := min(lo+500, len(accounts))
		err := retry(ctx, func() error {
			pipe := r.rdb.Pipeline()
			reads := make([]func() ([]string, error), 0, hi-lo)
			for _, a := range accounts[lo:hi] {
				reads = append(reads, store.QueueWindowMembers(ctx, pipe, prefix, a))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			for i, read := range reads {
				m, err := read()
				if err != nil {
					return err
				}
				out[lo+i] = m
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read windows: %w", err)
		}
	}
	return out, nil
}
