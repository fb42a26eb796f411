-- Apply a change to one account if its version is still the expected one.
--
-- KEYS[1] state HASH (with, in field wi, the window while it is small)
-- KEYS[2] window ZSET  KEYS[3] statistics HASH
-- KEYS[4] history LIST  KEYS[5] outbox LIST  KEYS[6] v1 statistics ZSET
-- KEYS[7] sender tally HASH  KEYS[8] recent logins LIST (deleted with
--         the account)
-- ARGV[1] expected version  ARGV[2] now (ms), or 0 for Redis's TIME, which
--         then sets the reinstatement floor: one clock for every process
-- ARGV[3] (unused)
-- ARGV[4] flags: "r" resets the AUP window and the volume record (the
--         same name as KEYS[1] but for the last letter: v, and vt, its
--         throttle) (reinstatement), "x" deletes
--         the account (its history stays, with a TTL of ARGV[5] seconds)
-- ARGV[5] history TTL after delete (s)
-- ARGV[6] number of fields to set, then field, value pairs
-- then the number of fields to delete, then the fields
-- then the number of history entries, then the entries
-- then the number of account events, then the events
-- Returns {1, new version} or {0, current version} on conflict.
--
-- A change makes the account's record durable: the TTL that the state of
-- an address seen only in verdicts carries is removed.
local st, win, stats, hist, outbox, legacy = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local cur = tonumber(redis.call('HGET', st, 'ver') or '0')
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
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
  local base = tonumber(redis.call('HGET', st, 'wb') or '0') * 3600000 -- wb is in hours
  redis.call('HSET', st, 'floor', now)
  redis.call('HDEL', st, 'floor_at', 'aup', 'report', 'smp', 'smp:1', 'smp:2', 'smp:3', 'wi')
  redis.call('ZREMRANGEBYSCORE', win, '-inf', (now - base) * 16 + 15)
  -- and the volume limits start afresh: their counts and any throttle
  local kb = string.sub(st, 1, -2)
  redis.call('DEL', kb .. 'v', kb .. 'vt')
  redis.call('HDEL', st, 'vt')
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
  redis.call('DEL', st, win, stats, legacy, KEYS[7], KEYS[8])
  redis.call('EXPIRE', hist, tonumber(ARGV[5]))
  return {1, 0}
end
if ne > 0 then redis.call('HSET', st, 'ob', 1) end
-- A change makes a durable record: the state hash of an address that had
-- none (a verdict-only address's, or a transient lockout's) may carry an
-- expiry, which must not delete the record now.
redis.call('HSETNX', st, 'created', now)
redis.call('PERSIST', st)
return {1, redis.call('HINCRBY', st, 'ver', 1)}
