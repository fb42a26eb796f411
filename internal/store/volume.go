package store

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aupd/aupd/rules"
)

// Key suffixes of an account's volume keys (docs/redis.md, "Volume").
const (
	sufVolume   = "v"  // STRING: the volume record, packed (volume.lua)
	sufThrottle = "vt" // STRING: "<until ms> <limit name>" while a throttle holds
)

//go:embed volume.lua
var volumeLua string

//go:embed volume_sender.lua
var volumeSenderLua string

var (
	volumeScript       = newLibrary("aupd_volume", crossingLua, volumeLua)
	volumeSenderScript = redis.NewScript(volumeSenderLua)
)

// VolumeLimits is an account's volume policy in the script's packed form.
// Build it once per policy with PackVolume.
type VolumeLimits struct {
	Policy rules.VolumePolicy
	packed []byte
}

// volumeKeys are the keys of the volume script: the account's state and
// its volume record (the script names its throttle from the state's key).
func (s *Store) volumeKeys(account string) []string {
	return []string{s.key(account, sufState), s.key(account, sufVolume)}
}

// The limit actions of the packed form.
const (
	volThrottle byte = iota + 1
	volSuspend
	volReportThrottle
	volReportSuspend
)

// PackVolume packs a volume policy for CountVolume. The limits must be
// valid (rules.ValidateVolume).
func PackVolume(pol rules.VolumePolicy) *VolumeLimits {
	type ring struct {
		bucket int64
		kind   byte
	}
	var rings []ring
	ringOf := make([]int, len(pol.Limits))
	for i, l := range pol.Limits {
		r := ring{bucket: l.Bucket().Milliseconds(), kind: 2}
		if l.Kind() == rules.VolumeMessages {
			r.kind = 1
		}
		j := 0
		for j < len(rings) && rings[j] != r {
			j++
		}
		if j == len(rings) {
			rings = append(rings, r)
		}
		ringOf[i] = j
	}
	be := binary.BigEndian
	var body []byte
	for _, r := range rings {
		body = be.AppendUint32(body, uint32(r.bucket))
		body = append(body, r.kind)
	}
	rs := fnv.New32a()
	_, _ = rs.Write(body)
	var limits, names []byte
	for i, l := range pol.Limits {
		limits = append(limits, byte(ringOf[i]))
		limits = be.AppendUint16(limits, uint16(l.Max()))
		limits = append(limits, actionCode(pol, l))
		names = be.AppendUint16(names, uint16(len(l.Name)))
		names = append(names, l.Name...)
	}
	ls := fnv.New32a()
	_, _ = ls.Write(limits)
	_, _ = ls.Write(names)
	packed := be.AppendUint16(nil, uint16(rs.Sum32()))
	packed = append(packed, byte(ls.Sum32()), byte(len(rings)), byte(len(pol.Limits)))
	packed = append(packed, body...)
	packed = append(packed, limits...)
	packed = append(packed, names...)
	return &VolumeLimits{Policy: pol, packed: packed}
}

func actionCode(pol rules.VolumePolicy, l rules.VolumeLimit) byte {
	switch {
	case pol.OnCrossing(l) == string(rules.VolumeThrottle):
		return volThrottle
	case pol.OnCrossing(l) == string(rules.VolumeSuspend):
		return volSuspend
	case l.Action == rules.VolumeThrottle:
		return volReportThrottle
	}
	return volReportSuspend
}

// VersionUnchecked is VolumeMessage.Version when no sender check was made
// on a known version of the account's state.
const VersionUnchecked = -1

// versionProbe asks only whether a message was counted already.
const versionProbe = -2

// VolumeMessage is one message an authenticated account sent, at the
// moment Postfix commits to it (END-OF-MESSAGE).
type VolumeMessage struct {
	Account string
	Company string // the account's company, recorded by a suspension
	// Version is the version of the account's state on which the sender
	// check allowed the message; the message is counted only if the state
	// is still at it (else the outcome is VolumeChanged). VersionUnchecked:
	// no check was made.
	Version int64
	// ID identifies the message across Postfix's repeated requests
	// (MessageID); 0: none, and every request counts.
	ID         uint32
	Recipients int
	// Client is the SMTP client's address (zero: none); the record keeps
	// the last three clients, an IPv6 client as its /64.
	Client netip.Addr
	Limits *VolumeLimits
	// SampleWindow is the spam count's window (aup.window): a suspension
	// carries as evidence the spam count's samples within it.
	SampleWindow time.Duration
}

// MessageID is the id of a message that Postfix asks about, from the
// request's instance (Postfix's id of the mail transaction) and queue_id:
// the same when Postfix asks again, 0 when both are empty.
func MessageID(instance, queueID string) uint32 {
	if instance == "" && queueID == "" {
		return 0
	}
	sum := sha256.Sum256([]byte(instance + "\x00" + queueID))
	if id := binary.BigEndian.Uint32(sum[:4]); id != 0 {
		return id
	}
	return 1
}

// VolumeOutcome is what became of a message CountVolume was given.
type VolumeOutcome int

// The outcomes of CountVolume.
const (
	VolumeCounted   VolumeOutcome = iota + 1 // counted
	VolumeDuplicate                          // counted before (Postfix asked again)
	VolumeThrottled                          // not counted: a throttle holds the account back
	VolumeChanged                            // not counted: the state changed since the sender check
	volumeNew                                // not counted (a probe): not counted before either
)

// VolumeCrossing is a limit the message took above its max.
type VolumeCrossing struct {
	Limit rules.VolumeLimit
	// Action is what the crossing did: throttle, suspend or report (shadow
	// mode or the allowlist). A suspend limit crossed while an AUP
	// suspension is in force, or after another suspend limit in the same
	// message, has action suspend and no ID: it suspended nothing.
	Action string
	Count  int       // the limit's count, this message included
	Since  time.Time // the start of the oldest bucket that counted
	Until  time.Time // a throttle's end
	ID     string    // the suspension's or report's id
}

// VolumeResult is the outcome of CountVolume.
type VolumeResult struct {
	Outcome VolumeOutcome
	// Throttle is the limit whose throttle held the message back
	// (VolumeThrottled), and Until its end.
	Throttle  string
	Until     time.Time
	Crossings []VolumeCrossing
	// Pending says that the account's outbox holds account events to
	// publish: a suspension this message made, or one a crash left.
	Pending bool
}

// Suspended reports whether the message made a suspension or a report
// of one, whose account event waits in the outbox.
func (r *VolumeResult) Suspended() bool {
	for _, c := range r.Crossings {
		if c.ID != "" {
			return true
		}
	}
	return false
}

// CountVolume counts a message against the account's volume limits, in
// one script call, and records what a crossing does: a throttle, a
// suspension with its account event and history entry, or a report. A
// message counted already (the same ID) is not counted again; one that a
// throttle holds back, or whose sender's state changed since the sender
// check, is not counted. A suspension's account event is left in the
// outbox, indexed for the sweep: publish it (FlushOutbox).
func (s *Store) CountVolume(ctx context.Context, m VolumeMessage) (VolumeResult, error) {
	if m.Limits == nil || len(m.Limits.Policy.Limits) == 0 {
		return VolumeResult{}, errors.New("count volume: no limits")
	}
	v, err := s.call(ctx, volumeScript, s.volumeKeys(m.Account), s.volumeMessage(m), m.Limits.packed).Result()
	if err != nil {
		return VolumeResult{}, wrap("count volume", classify(err))
	}
	r, err := parseVolume(v, m.Limits.Policy.Limits)
	if err != nil {
		return VolumeResult{}, err
	}
	if r.Suspended() {
		// A crash from here on leaves the entry in the outbox, where the
		// sweep finds it.
		if err := s.MarkOutbox(ctx, m.Account); err != nil {
			return r, err
		}
	}
	return r, nil
}

// volumeMessage is the script's message argument (volume.lua, ARGV[1]).
func (s *Store) volumeMessage(m VolumeMessage) []byte {
	be := binary.BigEndian
	var now [8]byte
	be.PutUint64(now[:], uint64(s.scriptNow()))
	b := append(make([]byte, 0, 128), now[2:]...)
	b = be.AppendUint64(b, uint64(m.Version))
	b = be.AppendUint32(b, uint32(max(m.Recipients, 0)))
	if m.ID != 0 {
		b = append(b, 4)
		b = be.AppendUint32(b, m.ID)
	} else {
		b = append(b, 0)
	}
	client := clientBytes(m.Client)
	b = append(b, byte(len(client)))
	b = append(b, client...)
	if m.Version == versionProbe {
		return b
	}
	for _, str := range [...]string{NewID(s.now()), m.Company, m.Account} {
		b = be.AppendUint16(b, uint16(len(str)))
		b = append(b, str...)
	}
	var w [8]byte
	be.PutUint64(w[:], uint64(m.SampleWindow.Milliseconds()))
	return append(b, w[2:]...)
}

// clientBytes is how the volume record keeps a client: an IPv4 address
// whole, an IPv6 address as its /64 prefix, which is one host (its
// temporary addresses change within it) or one subscriber's network.
func clientBytes(a netip.Addr) []byte {
	a = a.Unmap()
	switch {
	case a.Is4():
		return a.AsSlice()
	case a.Is6():
		return a.AsSlice()[:8]
	}
	return nil
}

// clientText is the text of a client the volume record kept: an IPv4
// address, or an IPv6 /64 prefix ("2001:db8:1:2::/64").
func clientText(b []byte) string {
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b)).String()
	case 8:
		var a [16]byte
		copy(a[:], b)
		return netip.PrefixFrom(netip.AddrFrom16(a), 64).String()
	}
	return ""
}

// CountedBefore reports whether a message with this id was counted
// against the account's volume already: Postfix asking again about a
// message it was told to accept.
func (s *Store) CountedBefore(ctx context.Context, account string, id uint32, limits *VolumeLimits) (bool, error) {
	if id == 0 || limits == nil || len(limits.Policy.Limits) == 0 {
		return false, nil
	}
	v, err := s.call(ctx, volumeScript, s.volumeKeys(account),
		s.volumeMessage(VolumeMessage{Version: versionProbe, ID: id}), limits.packed).Result()
	if err != nil {
		return false, wrap("count volume", classify(err))
	}
	r, err := parseVolume(v, limits.Policy.Limits)
	return r.Outcome == VolumeDuplicate, err
}

// parseVolume reads the script's reply: outcome * 2 + ob, or a table
// (volume.lua).
func parseVolume(reply any, limits []rules.VolumeLimit) (VolumeResult, error) {
	if n, ok := reply.(int64); ok {
		r := VolumeResult{Outcome: VolumeOutcome(n / 2), Pending: n%2 == 1}
		switch r.Outcome {
		case VolumeCounted, VolumeDuplicate, VolumeChanged, volumeNew:
			return r, nil
		}
		return VolumeResult{}, Permanent(fmt.Errorf("volume script returned %d", n))
	}
	v, ok := reply.([]any)
	if !ok || len(v) < 2 {
		return VolumeResult{}, Permanent(fmt.Errorf("volume script returned %v", reply))
	}
	r := VolumeResult{Outcome: VolumeOutcome(toInt(v[0])), Pending: toInt(v[1]) == 1}
	switch r.Outcome {
	case VolumeThrottled:
		if len(v) != 4 {
			return VolumeResult{}, Permanent(fmt.Errorf("volume script returned %d values for a throttle", len(v)))
		}
		r.Until = time.UnixMilli(toInt(v[2])).UTC()
		r.Throttle, _ = v[3].(string)
		return r, nil
	case VolumeCounted:
	case VolumeDuplicate, VolumeChanged, volumeNew:
		return r, nil
	default:
		return VolumeResult{}, Permanent(fmt.Errorf("volume script returned outcome %v", v[0]))
	}
	for i := 2; i+6 <= len(v); i += 6 {
		idx := int(toInt(v[i]))
		if idx < 0 || idx >= len(limits) {
			return VolumeResult{}, Permanent(fmt.Errorf("volume script returned limit %d of %d", idx, len(limits)))
		}
		c := VolumeCrossing{Limit: limits[idx], Count: int(toInt(v[i+2]))}
		switch byte(toInt(v[i+1])) {
		case volThrottle:
			c.Action = string(rules.VolumeThrottle)
		case volSuspend:
			c.Action = string(rules.VolumeSuspend)
		default:
			c.Action = string(rules.ActionReport)
		}
		if since := toInt(v[i+3]); since > 0 {
			c.Since = time.UnixMilli(since).UTC()
		}
		if until := toInt(v[i+4]); until > 0 && c.Action == string(rules.VolumeThrottle) {
			c.Until = time.UnixMilli(until).UTC()
		}
		c.ID, _ = v[i+5].(string)
		r.Crossings = append(r.Crossings, c)
	}
	return r, nil
}

// Throttle is a volume throttle that holds an account back.
type Throttle struct {
	Limit string // the limit's name
	Until time.Time
}

// Throttle reads the volume throttle that holds an account back, if any:
// a script call that decides by Redis's clock, and removes the state's
// marker of a throttle that ended. The RCPT-time lookup reads the state
// anyway (Account, Accounts), and calls this only when the state has the
// marker (Account.Throttled).
func (s *Store) Throttle(ctx context.Context, address string) (*Throttle, error) {
	v, err := volumeSenderScript.Run(ctx, s.rdb, []string{s.key(address, sufState), s.key(address, sufThrottle)}, s.scriptNow()).Slice()
	if err != nil {
		return nil, wrap("read throttle", err)
	}
	if len(v) != 2 {
		return nil, nil
	}
	name, _ := v[1].(string)
	return &Throttle{Limit: name, Until: time.UnixMilli(toInt(v[0])).UTC()}, nil
}

// fieldThrottle is the state's marker of a volume throttle: the RCPT-time
// lookup, which reads the state anyway, checks the throttle only when it
// is there.
const fieldThrottle = "vt"
