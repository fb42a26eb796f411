-- Ingest a batch of verdict events for ONE account, atomically.
--
-- KEYS[1] state HASH   KEYS[2] window ZSET   KEYS[3] other ZSET
-- KEYS[4] history LIST KEYS[5] outbox LIST
-- ARGV[1] now (ms)          ARGV[2] window (ms)     ARGV[3] threshold
-- ARGV[4] cap               ARGV[5] action on crossing: suspend | report
-- ARGV[6] id for a new suspension or report         ARGV[7] company
-- ARGV[8] now (RFC 3339)    ARGV[9] now - window (RFC 3339)
-- ARGV[10] account          ARGV[11] number of events, then 4 per event:
--   member (8-byte id hash), score (time_ms*16 + kind), counting (1|0),
--   sample ("fingerprint|stream sequence" or "")
--
-- A member's score packs the event time and its kind (direction*4+verdict),
-- so one sorted set both dedups ids and splits counts by direction.
-- Each set holds at most cap members, the newest by event time: the stored
-- count is exactly min(real count, cap), and cap > threshold keeps every
-- decision exact.
--
-- Returns {outcomes, count, capped, created, outbox length, crossing, id}
-- outcomes has one letter per event: c counted, s statistics only,
-- d duplicate, l late (outside the window or before the last
-- reinstatement), k counted at the cap (the count stays at cap).
local st, win, oth, hist, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local action, newid, company = ARGV[5], ARGV[6], ARGV[7]
local nowstr, winstartstr, account = ARGV[8], ARGV[9], ARGV[10]
local n = tonumber(ARGV[11])

local created = redis.call('HSETNX', st, 'created', now)
if company ~= '' then redis.call('HSET', st, 'company', company) end

local lo = now - window -- events at or before lo are outside the window
local floor = tonumber(redis.call('HGET', st, 'floor') or '0')
local startstr = winstartstr
if floor > lo then
  lo = floor
  startstr = redis.call('HGET', st, 'floor_at') or winstartstr
end
redis.call('ZREMRANGEBYSCORE', win, '-inf', lo * 16 + 15)
redis.call('ZREMRANGEBYSCORE', oth, '-inf', (now - window) * 16 + 15)

local suspended = redis.call('HGET', st, 'aup')
local reported = redis.call('HGET', st, 'report')
if reported and redis.call('ZCARD', win) <= threshold then
  -- the reported crossing is over; the next one is reported again
  redis.call('HDEL', st, 'report')
  reported = false
end
local frozen = suspended or reported

-- Evidence samples: up to three "time|fingerprint|seq" in fields smp:1..3,
-- preferring different fingerprints.
local smp = {}
for i = 1, 3 do
  local v = redis.call('HGET', st, 'smp:' .. i)
  if v then
    local t, fp = string.match(v, '^(%d+)|([^|]*)|')
    if tonumber(t) <= lo then
      redis.call('HDEL', st, 'smp:' .. i)
    else
      smp[i] = {t = tonumber(t), fp = fp}
    end
  end
end
local function keep_sample(t, ref)
  local fp = string.match(ref, '^([^|]*)|')
  local slot
  for i = 1, 3 do
    if not smp[i] then slot = i break end
  end
  if not slot then
    local seen, dup = {}, nil
    for i = 1, 3 do
      if smp[i].fp == fp then return end
      if seen[smp[i].fp] then
        if not dup or smp[i].t < smp[dup].t then dup = i end
      end
      seen[smp[i].fp] = true
    end
    slot = dup
  end
  if slot then
    smp[slot] = {t = t, fp = fp}
    redis.call('HSET', st, 'smp:' .. slot, t .. '|' .. ref)
  end
end

local function add(z, other, m, score)
  if redis.call('ZSCORE', z, m) or redis.call('ZSCORE', other, m) then return 'd' end
  if redis.call('ZCARD', z) >= cap then
    local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    if score <= tonumber(first[2]) then return 'k' end
    redis.call('ZPOPMIN', z)
    redis.call('ZADD', z, score, m)
    return 'k'
  end
  redis.call('ZADD', z, score, m)
  return 'c'
end

local out = {}
for i = 0, n - 1 do
  local m = ARGV[12 + i * 4]
  local score = tonumber(ARGV[13 + i * 4])
  local counting = ARGV[14 + i * 4] == '1'
  local ref = ARGV[15 + i * 4]
  local t = math.floor(score / 16)
  local r
  if counting then
    if t <= lo then
      r = 'l'
    else
      r = add(win, oth, m, score)
      if r == 'c' and ref ~= '' and not frozen then keep_sample(t, ref) end
    end
  else
    if t <= now - window then
      r = 'l'
    else
      r = add(oth, win, m, score)
      if r == 'c' or r == 'k' then r = 's' end
    end
  end
  out[#out + 1] = r
end

local count = redis.call('ZCARD', win)
local capped = 0
if count >= cap then capped = 1 end

local crossing, id = '', ''
if count > threshold and not suspended and not (action == 'report' and reported) then
  crossing, id = action, newid
  local q = cjson.encode
  local counts = {0, 0, 0}
  local members = redis.call('ZRANGE', win, 0, -1, 'WITHSCORES')
  for j = 2, #members, 2 do
    local dir = math.floor(math.fmod(tonumber(members[j]), 16) / 4) + 1
    counts[dir] = counts[dir] + 1
  end
  local seqs = {}
  for i = 1, 3 do
    local v = redis.call('HGET', st, 'smp:' .. i)
    if v then seqs[#seqs + 1] = string.match(v, '|(%d+)$') end
  end
  local services = {'send', 'webmail_send'}
  local allsvc = {'send', 'receive', 'imap', 'pop3', 'webmail', 'webmail_send'}
  local status = redis.call('HGET', st, 'status') or 'active'
  local old = {}
  for _, s in ipairs(allsvc) do
    if redis.call('HEXISTS', st, 'sus:' .. s) == 1 then old[#old + 1] = q(s) end
  end
  local svcjson = '[]'
  if action == 'suspend' then
    svcjson = '["send","webmail_send"]'
    local rec = '{"id":' .. q(id) .. ',"reason":"aup_violation","actor":"aupd","at":' .. q(nowstr) .. '}'
    for _, s in ipairs(services) do redis.call('HSETNX', st, 'sus:' .. s, rec) end
  end
  local new = {}
  for _, s in ipairs(allsvc) do
    if redis.call('HEXISTS', st, 'sus:' .. s) == 1 then new[#new + 1] = q(s) end
  end
  local sus = '{"id":' .. q(id) .. ',"action":' .. q(action) .. ',"services":' .. svcjson ..
    ',"threshold":' .. threshold .. ',"count":' .. count .. ',"capped":' .. (capped == 1 and 'true' or 'false') ..
    ',"counts":{"outbound":' .. counts[1] .. ',"inbound":' .. counts[2] .. ',"complaint":' .. counts[3] ..
    '},"window_start":' .. q(startstr) .. ',"window_end":' .. q(nowstr) ..
    ',"samples":[' .. table.concat(seqs, ',') .. ']}'
  local etype, field = 'suspended', 'aup'
  if action ~= 'suspend' then etype, field = 'reported', 'report' end
  redis.call('HSET', st, field, id, 'last_aup', sus)
  redis.call('HINCRBY', st, 'ver', 1)
  local state = '"status":' .. q(status) .. ',"suspended":['
  local ev = '{"id":' .. q(id) .. ',"type":' .. q(etype) .. ',"time":' .. q(nowstr) ..
    ',"account":' .. q(account) .. ',"company":' .. q(company) ..
    ',"actor":"aupd","reason":"aup_violation","old":{' .. state .. table.concat(old, ',') ..
    ']},"new":{' .. state .. table.concat(new, ',') .. ']},"suspension":' .. sus .. '}'
  redis.call('RPUSH', outbox, ev)
  redis.call('LPUSH', hist, '{"time":' .. q(nowstr) .. ',"actor":"aupd","action":' .. q(etype) ..
    ',"reason":"aup_violation","services":' .. svcjson .. ',"id":' .. q(id) ..
    ',"note":' .. q('count ' .. count .. ' exceeds threshold ' .. threshold) .. '}')
  redis.call('LTRIM', hist, 0, 999)
elseif reported and count <= threshold then
  -- the crossing is over; the next one is reported again
  redis.call('HDEL', st, 'report')
end

return {table.concat(out), count, capped, created, redis.call('LLEN', outbox), crossing, id}
