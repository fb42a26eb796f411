package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delivery states of a notice.
const (
	StatePending = "pending" // rendered, waiting for the next attempt
	StateSending = "sending" // a notifier holds the lease and is sending
	StateSent    = "sent"    // the SMTP server accepted it (or the .eml was written)
	StateFailed  = "failed"  // permanently rejected, or given up
)

// ErrNotFound is returned for a notice that does not exist (never queued,
// or past its retention).
var ErrNotFound = errors.New("notice not found")

// rediser is what the store needs from Redis; *redis.Client,
// *redis.ClusterClient and *redis.Ring all satisfy it.
type rediser interface {
	redis.Scripter
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	HGet(ctx context.Context, key, field string) *redis.StringCmd
	ZAdd(ctx context.Context, key string, members ...redis.Z) *redis.IntCmd
	ZRemRangeByScore(ctx context.Context, key, min, max string) *redis.IntCmd
	ZRevRange(ctx context.Context, key string, start, stop int64) *redis.StringSliceCmd
	ZCount(ctx context.Context, key, min, max string) *redis.IntCmd
}

// Store keeps the per-notice delivery state in Redis: one hash per notice
// at <prefix>:{<account>}:n:<suspension id>, on the account's cluster
// slot. The admin API reads it through Delivery, Evidence and Failed.
//
// Fields of the hash: state, event_id, account, company, suspension_id,
// recipient, sender, message_id, subject, message (the rendered message,
// sent byte for byte on every attempt), evidence (evidence.txt),
// created_at, attempts, first_attempt, last_attempt, owner, lease_until,
// last_error, sent_at, smtp_reply, failed_at. Times are Unix milliseconds.
type Store struct {
	rdb    rediser
	prefix string
}

// NewStore returns a Store over rdb with key prefix (default "aup").
func NewStore(rdb rediser, prefix string) *Store {
	if prefix == "" {
		prefix = "aup"
	}
	return &Store{rdb: rdb, prefix: prefix}
}

func (s *Store) key(account, suspensionID string) string {
	return s.prefix + ":{" + account + "}:n:" + suspensionID
}

func (s *Store) failedKey() string { return s.prefix + ":notices:failed" }

// Delivery is the delivery state of one notice, for the admin API.
type Delivery struct {
	Account      string `json:"account"`
	SuspensionID string `json:"suspension_id"`
	EventID      string `json:"event_id"`
	State        string `json:"state"`
	Recipient    string `json:"recipient"`
	// RecipientReason says why the notice did not go to the company's
	// abuse contact (Reason* constants); "" when it did. RecipientNote
	// says the same in a sentence, for people.
	RecipientReason string    `json:"recipient_reason,omitempty"`
	RecipientNote   string    `json:"recipient_note,omitempty"`
	MessageID       string    `json:"message_id"`
	Subject         string    `json:"subject"`
	Attempts        int       `json:"attempts"`
	CreatedAt       time.Time `json:"created_at"`
	FirstAttempt    time.Time `json:"first_attempt,omitzero"`
	LastAttempt     time.Time `json:"last_attempt,omitzero"`
	LastError       string    `json:"last_error,omitempty"`
	SentAt          time.Time `json:"sent_at,omitzero"`
	SMTPReply       string    `json:"smtp_reply,omitempty"`
	FailedAt        time.Time `json:"failed_at,omitzero"`
}

// Delivery returns the delivery state of the notice of one suspension.
func (s *Store) Delivery(ctx context.Context, account, suspensionID string) (Delivery, error) {
	h, err := s.rdb.HGetAll(ctx, s.key(account, suspensionID)).Result()
	if err != nil {
		return Delivery{}, fmt.Errorf("read notice: %w", err)
	}
	if len(h) == 0 {
		return Delivery{}, ErrNotFound
	}
	ms := func(f string) time.Time {
		v, err := strconv.ParseInt(h[f], 10, 64)
		if err != nil || v == 0 {
			return time.Time{}
		}
		return time.UnixMilli(v).UTC()
	}
	attempts, _ := strconv.Atoi(h["attempts"])
	return Delivery{
		Account: h["account"], SuspensionID: h["suspension_id"], EventID: h["event_id"],
		State: h["state"], Recipient: h["recipient"],
		RecipientReason: h["recipient_reason"], RecipientNote: RecipientNote(h["recipient_reason"]), MessageID: h["message_id"], Subject: h["subject"],
		Attempts: attempts, CreatedAt: ms("created_at"), FirstAttempt: ms("first_attempt"),
		LastAttempt: ms("last_attempt"), LastError: h["last_error"], SentAt: ms("sent_at"),
		SMTPReply: h["smtp_reply"], FailedAt: ms("failed_at"),
	}, nil
}

// Evidence returns the evidence.txt of the notice of one suspension.
func (s *Store) Evidence(ctx context.Context, account, suspensionID string) ([]byte, error) {
	b, err := s.rdb.HGet(ctx, s.key(account, suspensionID), "evidence").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read evidence: %w", err)
	}
	return b, nil
}

// Message returns the rendered notice (RFC 5322) of one suspension.
func (s *Store) Message(ctx context.Context, account, suspensionID string) ([]byte, error) {
	b, err := s.rdb.HGet(ctx, s.key(account, suspensionID), "message").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	return b, nil
}

// Failed lists up to limit notices that failed permanently within the
// retention, newest first.
func (s *Store) Failed(ctx context.Context, limit int) ([]Delivery, error) {
	if limit <= 0 {
		limit = 100
	}
	members, err := s.rdb.ZRevRange(ctx, s.failedKey(), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("list failed notices: %w", err)
	}
	out := make([]Delivery, 0, len(members))
	for _, m := range members {
		var ref [2]string
		if json.Unmarshal([]byte(m), &ref) != nil {
			continue
		}
		d, err := s.Delivery(ctx, ref[0], ref[1])
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// indexFailed adds a failed notice to the failed index and drops entries
// older than retention. The index is a separate key (it spans accounts),
// so it is written outside the scripts; it is a convenience for listing,
// the notice's hash stays the record.
func (s *Store) indexFailed(ctx context.Context, account, suspensionID string, now time.Time, retention time.Duration) error {
	member, _ := json.Marshal([2]string{account, suspensionID})
	if err := s.rdb.ZAdd(ctx, s.failedKey(), redis.Z{Score: float64(now.UnixMilli()), Member: string(member)}).Err(); err != nil {
		return fmt.Errorf("index failed notice: %w", err)
	}
	cutoff := strconv.FormatInt(now.Add(-retention).UnixMilli(), 10)
	if err := s.rdb.ZRemRangeByScore(ctx, s.failedKey(), "-inf", "("+cutoff).Err(); err != nil {
		return fmt.Errorf("trim failed index: %w", err)
	}
	return nil
}

// createScript stores a new notice unless one exists.
// KEYS[1] notice; ARGV[1] ttl ms, ARGV[2..] field, value pairs.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`)

// claimScript takes the sending lease of a notice.
// KEYS[1] notice; ARGV owner, now ms, lease ms.
// Returns {status, attempts, first_attempt, lease_until}; status is
// missing, sent, failed, busy (someone else holds an unexpired lease) or
// claimed.
var claimScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'owner', 'lease_until', 'first_attempt', 'attempts')
local state = h[1]
if not state then return {'missing', '0', '0', '0'} end
if state == 'sent' or state == 'failed' then return {state, h[5] or '0', h[4] or '0', '0'} end
local now = tonumber(ARGV[2])
if state == 'sending' and h[2] ~= ARGV[1] and tonumber(h[3] or '0') > now then
  return {'busy', h[5] or '0', h[4] or '0', h[3]}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local first = h[4]
if not first or first == '' then
  first = ARGV[2]
end
local until_ms = string.format('%.0f', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'state', 'sending', 'owner', ARGV[1], 'lease_until', until_ms,
  'first_attempt', first, 'last_attempt', ARGV[2])
return {'claimed', tostring(attempts), first, until_ms}
`)

// renewScript extends a lease the caller still holds.
// KEYS[1] notice; ARGV owner, lease_until ms. Returns 1 if renewed.
var renewScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'owner')
if h[1] ~= 'sending' or h[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[2])
return 1
`)

// finishScript records the outcome of an attempt.
// KEYS[1] notice; ARGV owner, outcome (sent|failed|retry), now ms,
// detail (SMTP reply or error), retention ms.
// Returns the state after the call, or "lost" when the caller no longer
// holds the lease and the outcome is not "sent" (a sent outcome is always
// recorded: it is a fact about the world).
var finishScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'owner')
if not h[1] then return 'missing' end
if h[1] == 'sent' then return 'sent' end
local outcome = ARGV[2]
if outcome == 'sent' then
  redis.call('HSET', KEYS[1], 'state', 'sent', 'sent_at', ARGV[3], 'smtp_reply', ARGV[4])
  redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 'sent'
end
if h[1] == 'failed' then return 'failed' end
if h[2] ~= ARGV[1] then return 'lost' end
if outcome == 'failed' then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'failed_at', ARGV[3], 'last_error', ARGV[4])
  redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 'failed'
end
redis.call('HSET', KEYS[1], 'state', 'pending', 'last_error', ARGV[4])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
return 'pending'
`)

// create stores a new notice with fields; false when it already existed.
func (s *Store) create(ctx context.Context, key string, ttl time.Duration, fields map[string]any) (bool, error) {
	args := make([]any, 0, 1+2*len(fields))
	args = append(args, ttl.Milliseconds())
	for k, v := range fields {
		args = append(args, k, v)
	}
	n, err := createScript.Run(ctx, s.rdb, []string{key}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("create notice: %w", err)
	}
	return n == 1, nil
}

type claim struct {
	status       string
	attempts     int
	firstAttempt time.Time
	leaseUntil   time.Time
}

func (s *Store) claim(ctx context.Context, key, owner string, now time.Time, lease time.Duration) (claim, error) {
	res, err := claimScript.Run(ctx, s.rdb, []string{key}, owner, now.UnixMilli(), lease.Milliseconds()).StringSlice()
	if err != nil {
		return claim{}, fmt.Errorf("claim notice: %w", err)
	}
	if len(res) != 4 {
		return claim{}, fmt.Errorf("claim notice: unexpected reply %q", res)
	}
	c := claim{status: res[0]}
	c.attempts, _ = strconv.Atoi(res[1])
	if ms, _ := strconv.ParseInt(res[2], 10, 64); ms > 0 {
		c.firstAttempt = time.UnixMilli(ms)
	}
	if ms, _ := strconv.ParseInt(res[3], 10, 64); ms > 0 {
		c.leaseUntil = time.UnixMilli(ms)
	}
	return c, nil
}

func (s *Store) renew(ctx context.Context, key, owner string, until time.Time) (bool, error) {
	n, err := renewScript.Run(ctx, s.rdb, []string{key}, owner, until.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("renew lease: %w", err)
	}
	return n == 1, nil
}

func (s *Store) finish(ctx context.Context, key, owner, outcome string, now time.Time, detail string, retention time.Duration) (string, error) {
	st, err := finishScript.Run(ctx, s.rdb, []string{key}, owner, outcome, now.UnixMilli(), detail, retention.Milliseconds()).Text()
	if err != nil {
		return "", fmt.Errorf("record %s: %w", outcome, err)
	}
	return st, nil
}

func (s *Store) message(ctx context.Context, key string) (map[string]string, error) {
	h, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("load notice: %w", err)
	}
	if len(h) == 0 {
		return nil, ErrNotFound
	}
	return h, nil
}
