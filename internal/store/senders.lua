-- Add to the accounts' sender tallies: per account, who sent the
-- messages the ingest counted (client address and login), as hints for
-- the account page. aupd gathers them in memory and writes them about
-- once a second (store.Senders).
--
-- KEYS: 1 per account, its tally HASH <prefix>:{<account>}:f; or, for a
--   call of many slots on a Redis Cluster (see ingest.lua), the first
--   account's only
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME)
-- ARGV[2] how long a sender is kept after it was last seen, in ms (the
--         window plus the future skew)
-- ARGV[3] the most senders an account keeps
-- ARGV[4] number of accounts
-- ARGV[5] k, the number of keys that follow (0, or, for a call of many
--   slots, the other accounts' keys)
-- then per account: its number of senders, then for each: field,
--   count, first seen, last seen (seconds)
--   field "<ip>\t<login>" (either may be empty)
--   value "<count>:<first seen>:<last seen>"
--
-- A sender not seen for the keep time is dropped; beyond the bound the
-- least recently seen are. The hash expires the keep time after its most
-- recent sender. Each account reads, then writes; an error (a key of the
-- wrong type, a malformed value) skips that account only.
-- Returns the positions (1-based) of the accounts that failed, negated
-- for those that moved.
local rcall, tonumber, smatch, sformat, tsort = redis.call, tonumber, string.match, string.format, table.sort
local now = tonumber(ARGV[1])
if now == 0 then
  local t = rcall('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local keep, bound = tonumber(ARGV[2]), tonumber(ARGV[3])
local lo = math.floor((now - keep) / 1000)

local function add(key, i, n)
  local all = rcall('HGETALL', key)
  local cur, drop = {}, {}
  for k = 1, #all, 2 do
    local c, f, l = smatch(all[k + 1], '^(%d+):(%d+):(%d+)$')
    if not c then error('malformed sender tally') end
    if l + 0 > lo then cur[all[k]] = {c + 0, f + 0, l + 0} else drop[#drop + 1] = all[k] end
  end
  for j = i, i + 4 * n - 4, 4 do
    local f, c, first, last = ARGV[j], ARGV[j + 1] + 0, ARGV[j + 2] + 0, ARGV[j + 3] + 0
    local e = cur[f]
    if e then
      e[1], e[2], e[3] = e[1] + c, math.min(e[2], first), math.max(e[3], last)
    elseif last > lo then
      cur[f] = {c, first, last}
    end
  end
  local order = {}
  for f in pairs(cur) do order[#order + 1] = f end
  tsort(order, function(a, b) return cur[a][3] > cur[b][3] end)
  local set, newest = {}, nil
  for k, f in ipairs(order) do
    local e = cur[f]
    if k > bound then
      drop[#drop + 1] = f
    else
      set[#set + 1] = f
      set[#set + 1] = sformat('%d:%d:%d', e[1], e[2], e[3])
      if not newest then newest = e[3] end
    end
  end
  if #drop > 0 then rcall('HDEL', key, unpack(drop)) end
  if #set > 0 then
    rcall('HSET', key, unpack(set))
    rcall('PEXPIRE', key, sformat('%d', newest * 1000 + keep - now))
  end
end

-- An account that a Cluster node refuses (refused, in refused.lua, put
-- before this file) writes nothing; its position is returned negated, and it is
-- run again in a call of its own slot.
local failed, nkeys = {}, tonumber(ARGV[5])
local i = 6 + nkeys
for a = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[i])
  local key = a == 1 and KEYS[1] or (nkeys > 0 and ARGV[4 + a] or KEYS[a])
  local ok, err = pcall(add, key, i + 1, n)
  if not ok then
    local moved = refused(type(err) == 'table' and err.err or tostring(err))
    failed[#failed + 1] = moved and -a or a
  end
  i = i + 1 + 4 * n
end
return failed
