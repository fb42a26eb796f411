-- Ingest one account's batch of verdict events, atomically.
--
-- It reads everything first and writes last, so that an error (a key of
-- the wrong type, say) leaves the account as it was. A batch costs the same
-- fixed handful of commands however many events it holds: TIME, one HMGET
-- of the state, ZMSCORE of the new ids, ZCOUNT, the window trim, one ZADD,
-- and writes only where something changed.
--
-- KEYS[1] state HASH   KEYS[2] window ZSET   KEYS[3] statistics HASH
-- KEYS[4] history LIST KEYS[5] outbox LIST   KEYS[6] v1 statistics ZSET
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME): one clock for every
--         process, so that skewed hosts cannot count a trimmed id twice
-- ARGV[2] window (ms)   ARGV[3] future skew (ms)   ARGV[4] threshold
-- ARGV[5] cap           ARGV[6] action on crossing: suspend | report
-- ARGV[7] id for a new suspension or report          ARGV[8] company
-- ARGV[9] account       ARGV[10] rebase the window's scores after (ms)
-- ARGV[11] number of statistics buckets, then 3 per bucket:
--   field ("<kind>.<hour mod 24>"), hour (ms / 3600000), increment
-- then the number of counting events, then 4 per event:
--   member (6-byte id hash), time (ms), kind (direction*4+verdict),
--   sample (4-byte fingerprint then the stream sequence, or "")
--
-- The window holds the counting events: member = id hash, score =
-- (time - base) * 16 + kind, where base (state field wb, in hours) keeps the score
-- within 32 bits so that the set stays in Redis's compact encoding. It
-- holds at most cap members, the newest by event time: the stored count is
-- exactly min(real count, cap), and cap > threshold keeps every decision
-- exact. Statistics-only events are hourly counters, never per event.
--
-- An address that only appears in verdicts has no record: its state and
-- window carry a TTL and expire once past the window plus the skew. A
-- crossing (or any change through apply.lua) makes the record durable.
--
-- Returns {outcomes, count, capped, crossing, id, pending outbox entries}
-- outcomes has one letter per counting event: c counted, d duplicate,
-- l late (outside the window or before the last reinstatement), k counted
-- at the cap (the count stays at cap).
local st, win, stats, hist, outbox, legacy = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window, skew = tonumber(ARGV[2]), tonumber(ARGV[3])
local threshold, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local action, newid, company, account = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local rebase_after = tonumber(ARGV[10])
local HOUR = 3600000

local F = {'created', 'ver', 'company', 'status', 'aup', 'report', 'floor', 'floor_at', 'smp', 'wb', 'we', 'ob',
  'sus:send', 'sus:receive', 'sus:imap', 'sus:pop3', 'sus:webmail', 'sus:webmail_send', 'smp:1'}
local SERVICES = {'send', 'receive', 'imap', 'pop3', 'webmail', 'webmail_send'}
local hv = redis.call('HMGET', st, unpack(F))
local h = {}
for i, f in ipairs(F) do h[f] = hv[i] end

local lo = now - window -- events at or before lo are outside the window
local floor = tonumber(h.floor or '0')
local wlo = math.max(lo, floor) -- counting events at or before wlo do not count
local base = nil -- the window's score base; wb is in hours, to stay short
if h.wb then base = tonumber(h.wb) * HOUR end

-- Statistics buckets: "<hour>:<n>" per (kind, hour of day).
local i = 11
local nstats = tonumber(ARGV[i]); i = i + 1
local sfields, shours, sincr = {}, {}, {}
for j = 1, nstats do
  sfields[j], shours[j], sincr[j] = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
end
local scur = {}
if nstats > 0 then
  sfields[nstats + 1] = '_e'
  scur = redis.call('HMGET', stats, unpack(sfields))
end

-- Counting events.
local n = tonumber(ARGV[i]); i = i + 1
local members, times, kinds, refs = {}, {}, {}, {}
for j = 1, n do
  members[j], times[j], kinds[j], refs[j] = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  i = i + 4
end

-- The window as it is. Rewrite it when its base is too old for compact
-- scores (or absent: a new account, or a window written by aupd v1, whose
-- scores are absolute and whose members are 8 bytes: their first 6 bytes
-- are the same id hash).
local rewrite = n > 0 and (base == nil or now - base > rebase_after)
local kept = {} -- in rewrite mode: member -> {t, kind}, the whole window
local count = 0
local known = {}
if rewrite then
  local old = base or 0
  local z = redis.call('ZRANGE', win, 0, -1, 'WITHSCORES')
  for j = 1, #z, 2 do
    local sc = tonumber(z[j + 1])
    local d = math.floor(sc / 16)
    local t = old + d
    if t > wlo then
      kept[string.sub(z[j], 1, 6)] = {t, sc - d * 16}
      count = count + 1
    end
  end
  base = math.floor(now / HOUR) * HOUR
elseif base then
  if n > 0 then known = redis.call('ZMSCORE', win, unpack(members)) end
  count = redis.call('ZCOUNT', win, '(' .. ((wlo - base) * 16 + 15), '+inf')
end

-- A reported crossing holds while the count stays above the threshold;
-- once it is over, the next crossing is reported again.
local reported = h.report and count > threshold
local frozen = h.aup or reported

-- Decide each event.
local out, add, seen = {}, {}, {}
local maxt = 0 -- the newest event time the window holds after this batch
for _, v in pairs(kept) do if v[1] > maxt then maxt = v[1] end end
for j = 1, n do
  local m, t = members[j], times[j]
  local r
  if t <= wlo then
    r = 'l'
  elseif seen[m] or (rewrite and kept[m]) or (not rewrite and known[j]) then
    r = 'd'
  else
    seen[m] = true
    add[#add + 1] = j
    if count + #add > cap then r = 'k' else r = 'c' end
    if t > maxt then maxt = t end
  end
  out[j] = r
end
local total = math.min(count + #add, cap)
local capped = count + #add >= cap

-- Evidence samples: up to three in field smp, packed 14 bytes each (time
-- in s, 4-byte fingerprint, 6-byte stream sequence) so that the field
-- stays short enough for the hash's compact encoding, preferring
-- different fingerprints; expired ones are dropped.
local SMP = '>I4c4I6'
local smp, smp_changed = {}, false
local function keep(t, fp, seq)
  if t * 1000 > wlo then smp[#smp + 1] = {t = t, fp = fp, seq = seq} else smp_changed = true end
end
if h['smp:1'] then -- v1 kept samples in smp:1..3 as "ms|fingerprint|seq"
  for _, v in ipairs(redis.call('HMGET', st, 'smp:1', 'smp:2', 'smp:3')) do
    local t, fp, seq = string.match(v or '', '^(%d+)|([^|]*)|(%d+)$')
    if t then keep(math.floor(tonumber(t) / 1000), string.sub(fp .. '0000', 1, 4), tonumber(seq)) end
  end
  smp_changed = true
elseif h.smp then
  for k = 1, #h.smp - 13, 14 do
    local t, fp, seq = struct.unpack(SMP, h.smp, k)
    keep(t, fp, seq)
  end
end
if not frozen then
  for _, j in ipairs(add) do
    local ref = refs[j]
    if #ref > 4 then
      local fp, seq = string.sub(ref, 1, 4), tonumber(string.sub(ref, 5))
      local t = math.floor(times[j] / 1000)
      local slot
      if #smp < 3 then
        slot = #smp + 1
      else
        -- replace the oldest sample whose fingerprint another one shares,
        -- unless this message is one of the three already
        local dup, has = nil, false
        local cnt = {}
        for _, x in ipairs(smp) do cnt[x.fp] = (cnt[x.fp] or 0) + 1 end
        for k, x in ipairs(smp) do
          if x.fp == fp then has = true end
          if cnt[x.fp] > 1 and (not dup or x.t < smp[dup].t) then dup = k end
        end
        if not has then slot = dup end
      end
      if slot then
        smp[slot] = {t = t, fp = fp, seq = seq}
        smp_changed = true
      end
    end
  end
end

-- A crossing: the count exceeds the threshold and nothing is in force.
local crossing = total > threshold and not h.aup and not (action == 'report' and reported)
local counts = {0, 0, 0}
if crossing then
  -- The kept window after this batch, newest cap members, by direction.
  local all = {}
  if rewrite then
    for _, v in pairs(kept) do all[#all + 1] = v end
  else
    local z = redis.call('ZRANGE', win, '(' .. ((wlo - base) * 16 + 15), '+inf', 'BYSCORE', 'WITHSCORES')
    for j = 1, #z, 2 do
      local sc = tonumber(z[j + 1])
      local d = math.floor(sc / 16)
      all[#all + 1] = {base + d, sc - d * 16}
    end
  end
  for _, j in ipairs(add) do all[#all + 1] = {times[j], kinds[j]} end
  table.sort(all, function(a, b) return a[1] > b[1] end)
  for k = 1, math.min(#all, cap) do
    local dir = math.floor(all[k][2] / 4) + 1
    counts[dir] = counts[dir] + 1
  end
  -- The lists written below must be lists: fail now, before any write.
  for _, k in ipairs({hist, outbox}) do
    local ty = redis.call('TYPE', k)['ok']
    if ty ~= 'none' and ty ~= 'list' then
      return redis.error_reply('WRONGTYPE ' .. k .. ' holds a ' .. ty)
    end
  end
end

---------------------------------------------------------------- writes --
local hset = {}
local function set(f, v) hset[#hset + 1] = f; hset[#hset + 1] = v end

local nkept = 0
for _ in pairs(kept) do nkept = nkept + 1 end
if rewrite then
  redis.call('DEL', win, legacy)
  local z = {}
  for m, v in pairs(kept) do z[#z + 1] = (v[1] - base) * 16 + v[2]; z[#z + 1] = m end
  for _, j in ipairs(add) do z[#z + 1] = (times[j] - base) * 16 + kinds[j]; z[#z + 1] = members[j] end
  for k = 1, #z, 8000 do
    redis.call('ZADD', win, unpack(z, k, math.min(k + 7999, #z)))
  end
  if #z > 0 then set('wb', base / HOUR) end
  if h['smp:1'] then redis.call('HDEL', st, 'smp:1', 'smp:2', 'smp:3') end
elseif h.wb then
  redis.call('ZREMRANGEBYSCORE', win, '-inf', (wlo - base) * 16 + 15)
  if #add > 0 then
    local z = {}
    for _, j in ipairs(add) do z[#z + 1] = (times[j] - base) * 16 + kinds[j]; z[#z + 1] = members[j] end
    redis.call('ZADD', win, unpack(z))
  end
end
if count + #add > cap then
  redis.call('ZREMRANGEBYRANK', win, 0, count + #add - cap - 1)
end

if smp_changed then
  local parts = {}
  for k, x in ipairs(smp) do parts[k] = struct.pack(SMP, x.t, x.fp, x.seq) end
  if #parts > 0 then set('smp', table.concat(parts)) else redis.call('HDEL', st, 'smp') end
end

if h.report and not reported and not (crossing and action == 'report') then
  redis.call('HDEL', st, 'report')
end

-- RFC 3339 in UTC with milliseconds (days from civil, Hinnant).
local function iso(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local sod = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(sod / 3600), math.floor(sod % 3600 / 60), sod % 60, ms - s * 1000)
end

local id = ''
local durable = h.created
if crossing then
  id = newid
  local q = cjson.encode
  local nowstr = iso(now)
  local startstr = iso(lo)
  if floor > lo then startstr = h.floor_at or iso(floor) end
  local old, new = {}, {}
  for _, s in ipairs(SERVICES) do
    if h['sus:' .. s] then old[#old + 1] = q(s); new[#new + 1] = q(s) end
  end
  local svcjson = '[]'
  if action == 'suspend' then
    svcjson = '["send","webmail_send"]'
    local rec = '{"id":' .. q(id) .. ',"reason":"aup_violation","actor":"aupd","at":' .. q(nowstr) .. '}'
    new = {}
    for _, s in ipairs(SERVICES) do
      local on = h['sus:' .. s]
      if not on and (s == 'send' or s == 'webmail_send') then set('sus:' .. s, rec); on = true end
      if on then new[#new + 1] = q(s) end
    end
  end
  local seqs = {}
  for k, x in ipairs(smp) do seqs[k] = string.format('%.0f', x.seq) end
  -- The crossing's record, built once: stored as last_aup, and carried by
  -- the outbox entry from which Go builds the account event.
  local sus = '{"id":' .. q(id) .. ',"action":' .. q(action) .. ',"services":' .. svcjson ..
    ',"threshold":' .. threshold .. ',"count":' .. total .. ',"capped":' .. (capped and 'true' or 'false') ..
    ',"counts":{"outbound":' .. counts[1] .. ',"inbound":' .. counts[2] .. ',"complaint":' .. counts[3] ..
    '},"window_start":' .. q(startstr) .. ',"window_end":' .. q(nowstr) ..
    ',"samples":[' .. table.concat(seqs, ',') .. ']}'
  local etype = 'suspended'
  if action == 'suspend' then set('aup', id) else etype = 'reported'; set('report', id) end
  set('last_aup', sus)
  set('ver', tonumber(h.ver or '0') + 1)
  set('ob', 1)
  if not durable then set('created', now) end
  local co = h.company or company
  if not h.company and company ~= '' then set('company', company) end
  redis.call('RPUSH', outbox, '{"crossing":{"type":' .. q(etype) .. ',"time":' .. q(nowstr) ..
    ',"account":' .. q(account) .. ',"company":' .. q(co) .. ',"status":' .. q(h.status or 'active') ..
    ',"old":[' .. table.concat(old, ',') .. '],"new":[' .. table.concat(new, ',') .. '],"suspension":' .. sus .. '}}')
  redis.call('LPUSH', hist, '{"time":' .. q(nowstr) .. ',"actor":"aupd","action":' .. q(etype) ..
    ',"reason":"aup_violation","services":' .. svcjson .. ',"id":' .. q(id) ..
    ',"note":' .. q('count ' .. total .. ' exceeds threshold ' .. threshold) .. '}')
  redis.call('LTRIM', hist, 0, 999)
  durable = true
end

-- Expiry once past the newest event plus the window and the skew,
-- rounded up to the hour so that it changes about once an hour.
local we_old = tonumber(h.we or '0')
local we = we_old
if maxt > 0 then we = math.max(we, math.ceil((maxt + window + skew) / HOUR)) end
if we > we_old then set('we', we) end
if #hset > 0 then redis.call('HSET', st, unpack(hset)) end
-- (PEXPIRE by the time left, which is PEXPIREAT with Redis's clock, and
-- stays right when tests pin the clock)
if we > we_old or (rewrite and nkept + #add > 0) then redis.call('PEXPIRE', win, we * HOUR - now) end
if crossing then
  redis.call('PERSIST', st)
elseif not durable and #hset > 0 then
  if we == 0 then we = math.ceil((now + window + skew) / HOUR) end
  redis.call('PEXPIRE', st, we * HOUR - now)
end

if nstats > 0 then
  local sset = {}
  for j = 1, nstats do
    local ch, cn = string.match(scur[j] or '', '^(%d+):(%d+)$')
    ch, cn = tonumber(ch or '0'), tonumber(cn or '0')
    if shours[j] > ch then
      sset[#sset + 1] = sfields[j]; sset[#sset + 1] = shours[j] .. ':' .. sincr[j]
    elseif shours[j] == ch then
      sset[#sset + 1] = sfields[j]; sset[#sset + 1] = ch .. ':' .. (cn + sincr[j])
    end -- an older hour than the slot holds: too late to count
  end
  local se = math.floor(now / HOUR) + 26
  if se > tonumber(scur[nstats + 1] or '0') then
    sset[#sset + 1] = '_e'; sset[#sset + 1] = se
  else
    se = nil
  end
  if #sset > 0 then redis.call('HSET', stats, unpack(sset)) end
  if se then redis.call('PEXPIRE', stats, se * HOUR - now) end
end

local pending = {}
if crossing or h.ob then pending = redis.call('LRANGE', outbox, 0, 99) end
return {table.concat(out), total, capped and 1 or 0, crossing and action or '', id, pending}
