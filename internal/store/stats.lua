-- Add statistics-only events (ham, kinds that do not count) to the
-- accounts' statistics hashes: approximate hourly buckets that decide
-- nothing. aupd gathers them in memory and writes them about once a
-- second (store.Stats), so that an account costs one call per flush
-- rather than one per batch.
--
-- KEYS: 1 per account, its statistics HASH <prefix>:{<account>}:t; or,
--   for a call of many slots on a Redis Cluster (see ingest.lua), the
--   first account's only
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME)
-- ARGV[2] number of accounts
-- ARGV[3] k, the number of keys that follow (0, or, for a call of many
--   slots, the other accounts' keys)
-- then per account: its number of buckets, then field, increment pairs:
--   field "<kind>.<hour>" (hour = ms / 3600000), increment as text
--
-- A field's first increment also sets the hash's expiry, 26 hours past
-- the current hour; the first of the current hour also drops the fields
-- older than a day, so that the hash holds at most a day of hours per
-- kind. (Earlier builds wrote "<kind>.<hour mod 24>" = "<hour>:<count>"
-- and an expiry field _e; they go the same way.) An account's error
-- (a key of the wrong type) skips that account only.
-- Returns the positions (1-based) of the accounts that moved, then the
-- number of accounts that failed otherwise.
local rcall, mfloor, tonumber, sformat, smatch = redis.call, math.floor, tonumber, string.format, string.match
local now = tonumber(ARGV[1])
if now == 0 then
  local t = rcall('TIME')
  now = tonumber(t[1]) * 1000 + mfloor(tonumber(t[2]) / 1000)
end
local HOUR = 3600000
local cur = mfloor(now / HOUR)

local function add(stats, i, n)
  local fresh, prune = false, false
  for j = i, i + 2 * n - 2, 2 do
    local f, inc = ARGV[j], ARGV[j + 1]
    -- (text + 0 converts once; tonumber twice)
    if rcall('HINCRBY', stats, f, inc) == inc + 0 then
      fresh = true
      if not prune and smatch(f, '%.(%d+)$') + 0 == cur then prune = true end
    end
  end
  if not fresh then return end
  rcall('PEXPIRE', stats, sformat('%d', (cur + 26) * HOUR - now))
  if not prune then return end
  local all, old = rcall('HGETALL', stats), {}
  for k = 1, #all, 2 do
    local f, v = all[k], all[k + 1]
    local h = smatch(v, '^(%d+):') or smatch(f, '%.(%d+)$')
    if not h or tonumber(h) <= cur - 26 then old[#old + 1] = f end
  end
  if #old > 0 then rcall('HDEL', stats, unpack(old)) end
end

-- An account that a Cluster node refuses (refused, in refused.lua, put
-- before this file) writes nothing, and is run again in a call of its own slot.
local failed, moved = 0, {}
local nkeys = tonumber(ARGV[3])
local i = 4 + nkeys
for a = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[i])
  local key = a == 1 and KEYS[1] or (nkeys > 0 and ARGV[2 + a] or KEYS[a])
  local ok, err = pcall(add, key, i + 1, n)
  if not ok then
    if refused(type(err) == 'table' and err.err or tostring(err)) then
      moved[#moved + 1] = a
    else
      failed = failed + 1
    end
  end
  i = i + 1 + 2 * n
end
moved[#moved + 1] = failed
return moved
