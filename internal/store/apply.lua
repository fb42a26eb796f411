-- Apply a change to one account if its version is still the expected one.
--
-- KEYS[1] state HASH  KEYS[2] window ZSET  KEYS[3] other ZSET
-- KEYS[4] history LIST  KEYS[5] outbox LIST
-- ARGV[1] expected version  ARGV[2] now (ms)  ARGV[3] now (RFC 3339)
-- ARGV[4] flags: "r" resets the AUP window (reinstatement), "x" deletes
--         the account (its history stays, with a TTL of ARGV[5] seconds)
-- ARGV[5] history TTL after delete (s)
-- ARGV[6] number of fields to set, then field, value pairs
-- then the number of fields to delete, then the fields
-- then the number of history entries, then the entries
-- then the number of account events, then the events
-- Returns {1, new version} or {0, current version} on conflict.
local st, win, oth, hist, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cur = tonumber(redis.call('HGET', st, 'ver') or '0')
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
local flags = ARGV[4]
local i = 6
local nset = tonumber(ARGV[i]); i = i + 1
for _ = 1, nset do
  redis.call('HSET', st, ARGV[i], ARGV[i + 1]); i = i + 2
end
local ndel = tonumber(ARGV[i]); i = i + 1
for _ = 1, ndel do
  redis.call('HDEL', st, ARGV[i]); i = i + 1
end
if string.find(flags, 'r', 1, true) then
  redis.call('HSET', st, 'floor', ARGV[2], 'floor_at', ARGV[3])
  redis.call('HDEL', st, 'aup', 'report', 'smp:1', 'smp:2', 'smp:3')
  redis.call('ZREMRANGEBYSCORE', win, '-inf', tonumber(ARGV[2]) * 16 + 15)
end
local nh = tonumber(ARGV[i]); i = i + 1
for _ = 1, nh do
  redis.call('LPUSH', hist, ARGV[i]); i = i + 1
end
if nh > 0 then redis.call('LTRIM', hist, 0, 999) end
local ne = tonumber(ARGV[i]); i = i + 1
for _ = 1, ne do
  redis.call('RPUSH', outbox, ARGV[i]); i = i + 1
end
if string.find(flags, 'x', 1, true) then
  redis.call('DEL', st, win, oth)
  redis.call('EXPIRE', hist, tonumber(ARGV[5]))
  return {1, 0}
end
-- A change makes a durable record: the state hash of an address that had
-- none (a verdict-only address's, or a transient lockout's) may carry an
-- expiry, which must not delete the record now.
redis.call('HSETNX', st, 'created', ARGV[2])
redis.call('PERSIST', st)
return {1, redis.call('HINCRBY', st, 'ver', 1)}
