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
-- kind (HLEN first: a hash that holds only the fields this call made, a
-- new one most often, is not read back). (Earlier builds wrote "<kind>.<hour mod 24>" = "<hour>:<count>"
-- and an expiry field _e; they go the same way.) An account's error
-- (a key of the wrong type) skips that account only.
-- Returns the positions (1-based) of the accounts that moved, then the
-- number of accounts that failed otherwise.
local rcall, mfloor, tonumber, sformat, sfind, ssub = redis.call, math.floor, tonumber, string.format, string.find, string.sub
local now = tonumber(ARGV[1])
if now == 0 then
  local t = rcall('TIME')
  now = tonumber(t[1]) * 1000 + mfloor(tonumber(t[2]) / 1000)
end
local HOUR = 3600000
local cur = mfloor(now / HOUR)
-- a field of the current hour ends with this (plain comparisons: a
-- pattern match costs about as much as a command here)
local dotcur = sformat('.%d', cur)
local ncur = #dotcur

-- The hour of a field: "<hour>:<n>" in an earlier build's value, else
-- the field's "<kind>.<hour>"; nil for anything else.
local function hour_of(f, v)
  local c = sfind(v, ':', 1, true)
  if c then return tonumber(ssub(v, 1, c - 1)) end
  local d = sfind(f, '.', 1, true)
  return d and tonumber(ssub(f, d + 1))
end

local function add(stats, i, n)
  local fresh, prune = 0, false
  for j = i, i + 2 * n - 2, 2 do
    local f, inc = ARGV[j], ARGV[j + 1]
    -- (text + 0 converts once; tonumber twice)
    if rcall('HINCRBY', stats, f, inc) == inc + 0 then
      fresh = fresh + 1
      if not prune and ssub(f, -ncur) == dotcur then prune = true end
    end
  end
  if fresh == 0 then return end
  rcall('PEXPIRE', stats, sformat('%d', (cur + 26) * HOUR - now))
  -- A hash that holds only the fields just made (a new one, most often)
  -- has nothing to drop.
  if not prune or rcall('HLEN', stats) == fresh then return end
  local all, old = rcall('HGETALL', stats), {}
  for k = 1, #all, 2 do
    local h = hour_of(all[k], all[k + 1])
    if not h or h <= cur - 26 then old[#old + 1] = all[k] end
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
