-- Ingest a batch of verdict events for one or more accounts (one call
-- holds accounts of one Redis Cluster slot; standalone Redis takes many).
-- Each account is atomic on its own and fails on its own: its part reads
-- what decides first and writes last, so that an error (a key of the
-- wrong type, say) leaves it as it was, and the other accounts of the call
-- go on. An account costs the same fixed handful of commands however many
-- events it has: one HMGET of the state, the window trim, ZCARD, ZMSCORE
-- of the ids (or, for a single event, ZADD NX, which learns whether it is
-- new and adds it at once), one ZADD, and writes only where something
-- changed. Statistics-only events do not come here (stats.lua).
--
-- KEYS: 1 per account, its state HASH <prefix>:{<account>}:s; its other
--       keys share the name but for the last letter (w window ZSET,
--       h history LIST, o outbox LIST, x v1 statistics ZSET), and so its
--       Cluster slot
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME): one clock for every
--         process, so that skewed hosts cannot count a trimmed id twice
-- ARGV[2] window (ms)   ARGV[3] future skew (ms)
-- ARGV[4] rebase the window's scores after (ms)   ARGV[5] number of accounts
-- ARGV[5+a] account a's batch, packed big-endian (one string: Lua makes
--   one string for it, and numbers unpack without parsing text):
--   threshold I4, cap I4, action B (1 suspend, 2 report), counting
--   events I4 (0: an empty batch, which reads the count);
--   per counting event 25 bytes: member c6 (id hash), time i8 (ms, signed),
--   kind B (direction*4+verdict), stream sequence I6 (0: no sample),
--   fingerprint c4;
--   then, read only on a crossing: id for a new suspension or report,
--   company, account, each I2+c0
--
-- The window holds the counting events: member = id hash, score =
-- (time - base) * 16 + kind, where base (state field wb, in hours) keeps
-- the score within 32 bits so that the set stays in Redis's compact
-- encoding. It holds at most cap members, the newest by event time: the
-- stored count is exactly min(real count, cap), and cap > threshold keeps
-- every decision exact.
--
-- An address that only appears in verdicts has no record: its state and
-- window carry a TTL and expire once past the window plus the skew. A
-- crossing (or any change through apply.lua) makes the record durable.
--
-- Returns, per account, one integer or string when nothing is to be
-- published (see reply); else
-- {outcomes, count, capped, crossing, id, pending outbox entries}; or
-- {"!" .. error} when its part failed. outcomes has one
-- letter per counting event: c counted, d duplicate, l late (outside the
-- window or before the last reinstatement), k counted at the cap.
-- Globals cost a table lookup each time: the hot path uses locals. The
-- state's numbers are read by arithmetic (wb * HOUR, we_s + 0), which
-- converts the text once where tonumber converts it twice; a malformed
-- one fails the account's part. Tables cost more than commands here, so
-- the hot path makes few: per-event values live in arrays reused from one
-- account to the next, filled up to a count rather than cleared.
local KEYS, ARGV, tonumber, pcall, type, tostring = KEYS, ARGV, tonumber, pcall, type, tostring
local rcall, mfloor, mceil, mmin = redis.call, math.floor, math.ceil, math.min
local unpack_, ssub, sformat = struct.unpack, string.sub, string.format
local now = tonumber(ARGV[1])
if now == 0 then
  local t = rcall('TIME')
  now = tonumber(t[1]) * 1000 + mfloor(tonumber(t[2]) / 1000)
end
local window, skew, rebase_after = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local HOUR = 3600000
-- Redis 7.0 turns a number argument of redis.call into text with "%.17g",
-- which costs about as much as a whole ZCARD: integers go as text made
-- with "%d" (about half that), and those that most accounts of a call
-- share (the trims' bounds, the expiry hours and times left: now is the
-- call's) are made once.
local TEXT = {}
local function shared_text(n)
  local s = TEXT[n]
  if not s then s = sformat('%d', n); TEXT[n] = s end
  return s
end
local SMP = '>I4c4I6' -- a sample: time (s), fingerprint, stream sequence
local SMPN = {SMP, SMP .. 'I4c4I6', SMP .. 'I4c4I6I4c4I6'} -- one to three, packed in one call

-- RFC 3339 in UTC with milliseconds (days from civil, Hinnant).
local function iso(ms)
  local s = mfloor(ms / 1000)
  local days = mfloor(s / 86400)
  local sod = s - days * 86400
  local z = days + 719468
  local era = mfloor(z / 146097)
  local doe = z - era * 146097
  local yoe = mfloor((doe - mfloor(doe / 1460) + mfloor(doe / 36524) - mfloor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + mfloor(yoe / 4) - mfloor(yoe / 100))
  local mp = mfloor((5 * doy + 2) / 153)
  local d = doy - mfloor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    mfloor(sod / 3600), mfloor(sod % 3600 / 60), sod % 60, ms - s * 1000)
end

local function fail(msg) error({err = msg}) end
-- The events of the account being worked on, reused from one account to
-- the next (entries past n are stale and never read).
local EM, ET, EK, ES, EF = {}, {}, {}, {}, {} -- member, time, kind, sequence, fingerprint offset
-- ADD and HSET are filled up to a count (nadd, nh) rather than cleared.
local ADD, OUT, HSET = {}, {}, {} -- new events' indexes, outcome letters, HSET arguments
-- ZADD of score/member pairs, in parts: Lua passes at most 8000 values to
-- a call.
local function zadd(key, z)
  for i = 1, #z, 4000 do
    rcall('ZADD', key, unpack(z, i, mmin(i + 3999, #z)))
  end
end

-- Evidence samples: up to three in field smp, 14 bytes each, read into
-- SMT/SMF/SMQ (time in s, fingerprint, stream sequence; entries past the
-- count are stale). Expired ones are dropped (changed is then true).
local SMT, SMF, SMQ = {}, {}, {}
local function read_samples(st, smp_s, v1, wlo)
  local ns, changed = 0, false
  if v1 then -- "ms|fingerprint|seq" in smp:1..3
    for _, v in ipairs(rcall('HMGET', st, 'smp:1', 'smp:2', 'smp:3')) do
      local t, fp, seq = string.match(v or '', '^(%d+)|([^|]*)|(%d+)$')
      if t then
        t = mfloor(tonumber(t) / 1000)
        if t * 1000 > wlo then ns = ns + 1; SMT[ns], SMF[ns], SMQ[ns] = t, ssub(fp .. '0000', 1, 4), tonumber(seq) end
      end
    end
    changed = true
  elseif smp_s then
    for i = 1, #smp_s - 13, 14 do
      local t, fp, seq = unpack_(SMP, smp_s, i)
      if t * 1000 > wlo then ns = ns + 1; SMT[ns], SMF[ns], SMQ[ns] = t, fp, seq else changed = true end
    end
  end
  return ns, changed
end

-- Whether three stored samples are final while none of them expires:
-- with three different fingerprints, no new sample replaces one (see
-- sample_slot). One unpack instead of reading them all, for the common
-- case of an account that has its evidence already.
local function samples_final(smp_s, wlo)
  if not smp_s or #smp_s ~= 42 then return false end
  local t1, f1, _, t2, f2, _, t3, f3 = unpack_('>I4c4I6I4c4I6I4c4', smp_s)
  return f1 ~= f2 and f1 ~= f3 and f2 ~= f3 and mmin(t1, t2, t3) * 1000 > wlo
end

-- where a new sample with fingerprint fp goes among ns: the next slot
-- while there are fewer than three; else the oldest sample whose
-- fingerprint another one shares, unless fp is one of the three already
-- (nil: nowhere)
local function sample_slot(ns, fp)
  if ns < 3 then return ns + 1 end
  local f1, f2, f3 = SMF[1], SMF[2], SMF[3]
  if fp == f1 or fp == f2 or fp == f3 then return nil end
  local dup
  if f1 == f2 or f1 == f3 then dup = 1 end
  if (f2 == f1 or f2 == f3) and (not dup or SMT[2] < SMT[dup]) then dup = 2 end
  if (f3 == f1 or f3 == f2) and (not dup or SMT[3] < SMT[dup]) then dup = 3 end
  return dup
end

-- The lists a crossing writes must be lists: fail before any write.
local function check_lists(kb)
  for _, key in ipairs({kb .. 'h', kb .. 'o'}) do
    local ty = rcall('TYPE', key)['ok']
    if ty ~= 'none' and ty ~= 'list' then fail('WRONGTYPE ' .. key .. ' holds a ' .. ty) end
  end
end

-- The reply of an account with nothing to publish. At most one counting
-- event: one integer, ((count + 1) * 2 + capped) * 8 + outcome (0 none,
-- 1 c, 2 d, 3 l, 4 k), the cheapest reply to make and to read. More: a
-- string, count i4, capped B, then the outcome letters.
local CODE = {c = 1, d = 2, l = 3, k = 4}
local function reply(total, capped, outs)
  if #outs <= 1 then return ((total + 1) * 2 + (capped and 1 or 0)) * 8 + (CODE[outs] or 0) end
  return struct.pack('>i4B', total, capped and 1 or 0) .. outs
end

-- one account: its state key and its packed batch
local function one(st, b)
  local kb = ssub(st, 1, -2) -- the account's key name but for the last letter
  local threshold, cap, act, n, pos = unpack_('>I4I4BI4', b)
  local win = kb .. 'w'
  for j = 1, n do
    EM[j], ET[j], EK[j], ES[j] = unpack_('>c6i8BI6', b, pos)
    EF[j] = pos + 21
    pos = pos + 25
  end
  local tp = pos -- the crossing's strings

  -- The state the hot path needs, in one HMGET; a crossing reads the rest.
  local hv = rcall('HMGET', st, 'created', 'aup', 'report', 'floor', 'smp', 'wb', 'we', 'ob')
  local created, aup, report, floor_s, smp_s, wb, we_s, ob = hv[1], hv[2], hv[3], hv[4], hv[5], hv[6], hv[7], hv[8]
  -- aupd v1 always wrote created, never wb, and kept samples in smp:1..3
  local v1 = created and not wb and rcall('HEXISTS', st, 'smp:1') == 1

  local lo = now - window -- events at or before lo are outside the window
  local floor = floor_s and floor_s + 0 or 0
  local wlo = floor > lo and floor or lo -- counting events at or before wlo do not count
  local base = nil -- the window's score base; wb is in hours, to stay short
  if wb then base = wb * HOUR end

  -- The window as it is. Rewrite it when its base is too old for compact
  -- scores (or absent: a new account, or a window written by aupd v1,
  -- whose scores are absolute and whose members are 8 bytes: their first
  -- 6 bytes are the same id hash).
  local rewrite = n > 0 and (base == nil or now - base > rebase_after)
  local kept, nkept = nil, 0 -- in rewrite mode: member -> {t, kind}
  local count, known, known1 = 0, nil, false
  local added1 = false -- the one event of the batch was added already
  local maxt = 0 -- the newest event time the window holds after this batch
  local bound -- the window's highest score that no longer counts
  if rewrite then
    kept = {}
    local old = base or 0
    -- A new address has no window to carry over (aupd v1 always wrote
    -- created): the DEL below clears any leftover, and nothing is read.
    local z = {}
    if base or created then z = rcall('ZRANGE', win, 0, -1, 'WITHSCORES') end
    for j = 1, #z, 2 do
      local sc = tonumber(z[j + 1])
      local d = mfloor(sc / 16)
      local t = old + d
      if t > wlo then
        kept[ssub(z[j], 1, 6)] = {t, sc - d * 16}
        count = count + 1
        if t > maxt then maxt = t end
      end
    end
    nkept = count
    base = mfloor(now / HOUR) * HOUR
  elseif base then
    -- Trim first: members at or below bound no longer count, so removing
    -- them changes nothing a later step or reader sees, even when this
    -- account's part fails after it. The count is then ZCARD.
    bound = (wlo - base) * 16 + 15
    rcall('ZREMRANGEBYSCORE', win, '-inf', shared_text(bound))
    count = rcall('ZCARD', win)
    if n == 1 then
      -- One event: ZADD NX both learns whether its id is new and adds
      -- it. A crossing may follow, so its lists are checked first.
      if ET[1] > wlo then
        -- (the crossing test below, with the count this event may make)
        if count + 1 > threshold and not aup and not (act ~= 1 and report and count > threshold) then check_lists(kb) end
        known1 = rcall('ZADD', win, 'NX', sformat('%d', (ET[1] - base) * 16 + EK[1]), EM[1]) == 0
        added1 = not known1
      end
    elseif n > 1 then
      -- in parts past 4000: Lua unpacks at most 8000 values at once
      known = rcall('ZMSCORE', win, unpack(EM, 1, mmin(n, 4000)))
      for i = 4001, n, 4000 do
        local part = rcall('ZMSCORE', win, unpack(EM, i, mmin(i + 3999, n)))
        for j = 1, #part do known[i + j - 1] = part[j] end
      end
    end
  end

  -- A reported crossing holds while the count stays above the threshold;
  -- once it is over, the next crossing is reported again.
  local reported = report and count > threshold
  local frozen = aup or reported

  -- Decide each event: ADD holds the indexes of the new ones.
  local add, out, seen = ADD, OUT, nil
  local nadd = 0
  local outs
  for j = 1, n do
    local m, t = EM[j], ET[j]
    local r
    if t <= wlo then
      r = 'l'
    elseif (seen and seen[m]) or (kept and kept[m]) or (known and known[j]) or known1 then
      r = 'd'
    else
      if n > 1 then
        seen = seen or {}
        seen[m] = true
      end
      nadd = nadd + 1
      add[nadd] = j
      if count + nadd > cap then r = 'k' else r = 'c' end
      if t > maxt then maxt = t end
    end
    if n == 1 then outs = r else out[j] = r end
  end
  if n > 1 then outs = table.concat(out, '', 1, n) end
  outs = outs or ''
  local total = mmin(count + nadd, cap)
  local capped = count + nadd > cap -- events were dropped: the real count is higher

  -- Evidence samples: up to three, preferring different fingerprints.
  -- Read only when they may change.
  local ns, smp_changed = nil, false -- ns: the samples read (nil: not read)
  if v1 then ns, smp_changed = read_samples(st, smp_s, v1, wlo) end
  if not frozen and not samples_final(smp_s, wlo) then
    for k = 1, nadd do
      local j = add[k]
      if ES[j] > 0 then
        if not ns then ns, smp_changed = read_samples(st, smp_s, v1, wlo) end
        local fp = ssub(b, EF[j], EF[j] + 3)
        local slot = sample_slot(ns, fp)
        if slot then
          SMT[slot], SMF[slot], SMQ[slot] = mfloor(ET[j] / 1000), fp, ES[j]
          if slot > ns then ns = slot end
          smp_changed = true
        end
      end
    end
  end

  -- A crossing: the count exceeds the threshold and nothing is in force.
  local action = act == 1 and 'suspend' or 'report'
  local crossing = total > threshold and not aup and not (action == 'report' and reported)
  local x, counts, hist, outbox
  if crossing then
    hist, outbox = kb .. 'h', kb .. 'o'
    if not ns then ns, smp_changed = read_samples(st, smp_s, v1, wlo) end
    x = {}
    local XF = {'ver', 'company', 'status', 'sus:send', 'sus:receive', 'sus:imap', 'sus:pop3', 'sus:webmail', 'sus:webmail_send'}
    local xv = rcall('HMGET', st, unpack(XF))
    for i, f in ipairs(XF) do x[f] = xv[i] end
    -- The kept window after this batch, newest cap members, by direction.
    local all = {}
    if rewrite then
      for _, v in pairs(kept) do all[#all + 1] = v end
    else
      local z = rcall('ZRANGE', win, 0, -1, 'WITHSCORES') -- trimmed already
      for j = 1, #z, 2 do
        local sc = tonumber(z[j + 1])
        local d = mfloor(sc / 16)
        all[#all + 1] = {base + d, sc - d * 16}
      end
    end
    if not added1 then
      for k = 1, nadd do local j = add[k]; all[#all + 1] = {ET[j], EK[j]} end
    end
    table.sort(all, function(a, c) return a[1] > c[1] end)
    counts = {0, 0, 0}
    for i = 1, mmin(#all, cap) do
      local dir = mfloor(all[i][2] / 4) + 1
      counts[dir] = counts[dir] + 1
    end
    if not added1 then check_lists(kb) end -- else checked before the ZADD
  end

  -------------------------------------------------------------- writes --
  local hset, nh = HSET, 0
  if rewrite then
    if base or created then rcall('DEL', win, kb .. 'x') else rcall('DEL', win) end
    local z = {}
    for m, v in pairs(kept) do z[#z + 1] = sformat('%d', (v[1] - base) * 16 + v[2]); z[#z + 1] = m end
    for k = 1, nadd do local j = add[k]; z[#z + 1] = sformat('%d', (ET[j] - base) * 16 + EK[j]); z[#z + 1] = EM[j] end
    zadd(win, z)
    if #z > 0 then hset[nh + 1], hset[nh + 2], nh = 'wb', shared_text(base / HOUR), nh + 2 end
    if v1 then rcall('HDEL', st, 'smp:1', 'smp:2', 'smp:3') end
  elseif base then
    if added1 then
      -- added by ZADD NX above
    elseif nadd == 1 then
      local j = add[1]
      rcall('ZADD', win, sformat('%d', (ET[j] - base) * 16 + EK[j]), EM[j])
    elseif nadd > 1 then
      local z = {}
      for k = 1, nadd do local j = add[k]; z[#z + 1] = sformat('%d', (ET[j] - base) * 16 + EK[j]); z[#z + 1] = EM[j] end
      zadd(win, z)
    end
  end
  if count + nadd > cap then
    rcall('ZREMRANGEBYRANK', win, '0', sformat('%d', count + nadd - cap - 1))
  end

  if smp_changed then
    if ns > 0 then
      local packed = struct.pack(SMPN[mmin(ns, 3)], SMT[1], SMF[1], SMQ[1], SMT[2], SMF[2], SMQ[2], SMT[3], SMF[3], SMQ[3])
      hset[nh + 1], hset[nh + 2], nh = 'smp', packed, nh + 2
    else
      rcall('HDEL', st, 'smp')
    end
  end
  if report and not reported and not (crossing and action == 'report') then
    rcall('HDEL', st, 'report')
  end

  local id = ''
  local durable = created
  if crossing then
    local company, account
    id, company, account = unpack_('>I2c0I2c0I2c0', b, tp)
    local q = cjson.encode
    local nowstr = iso(now)
    local startstr = iso(wlo)
    local old, new = {}, {}
    local svcjson = '[]'
    for _, s in ipairs({'send', 'receive', 'imap', 'pop3', 'webmail', 'webmail_send'}) do
      local on = x['sus:' .. s]
      if on then old[#old + 1] = q(s) end
      if action == 'suspend' and not on and (s == 'send' or s == 'webmail_send') then
        hset[nh + 1], hset[nh + 2], nh = 'sus:' .. s,
          '{"id":' .. q(id) .. ',"reason":"aup_violation","actor":"aupd","at":' .. q(nowstr) .. '}', nh + 2
        on = true
      end
      if on then new[#new + 1] = q(s) end
    end
    if action == 'suspend' then svcjson = '["send","webmail_send"]' end
    local seqs = {}
    for i = 1, ns do seqs[i] = sformat('%.0f', SMQ[i]) end
    -- The crossing's record, built once: stored as last_aup, and carried
    -- by the outbox entry from which Go builds the account event.
    local sus = '{"id":' .. q(id) .. ',"action":' .. q(action) .. ',"services":' .. svcjson ..
      ',"threshold":' .. threshold .. ',"count":' .. total .. ',"capped":' .. (capped and 'true' or 'false') ..
      ',"counts":{"outbound":' .. counts[1] .. ',"inbound":' .. counts[2] .. ',"complaint":' .. counts[3] ..
      '},"window_start":' .. q(startstr) .. ',"window_end":' .. q(nowstr) ..
      ',"samples":[' .. table.concat(seqs, ',') .. ']}'
    local etype = 'suspended'
    if action ~= 'suspend' then etype = 'reported' end
    local co = x.company or company
    for _, kv in ipairs({{action == 'suspend' and 'aup' or 'report', id}, {'last_aup', sus},
        {'ver', tonumber(x.ver or '0') + 1}, {'ob', 1}}) do
      hset[nh + 1], hset[nh + 2], nh = kv[1], kv[2], nh + 2
    end
    if not durable then hset[nh + 1], hset[nh + 2], nh = 'created', now, nh + 2 end
    if not x.company and company ~= '' then hset[nh + 1], hset[nh + 2], nh = 'company', company, nh + 2 end
    rcall('RPUSH', outbox, '{"crossing":{"type":' .. q(etype) .. ',"time":' .. q(nowstr) ..
      ',"account":' .. q(account) .. ',"company":' .. q(co) .. ',"status":' .. q(x.status or 'active') ..
      ',"old":[' .. table.concat(old, ',') .. '],"new":[' .. table.concat(new, ',') .. '],"suspension":' .. sus .. '}}')
    rcall('LPUSH', hist, '{"time":' .. q(nowstr) .. ',"actor":"aupd","action":' .. q(etype) ..
      ',"reason":"aup_violation","services":' .. svcjson .. ',"id":' .. q(id) ..
      ',"note":' .. q('count ' .. total .. ' exceeds threshold ' .. threshold) .. '}')
    rcall('LTRIM', hist, 0, 999)
    durable = true
  end

  -- Expiry once past the newest event plus the window and the skew,
  -- rounded up to the hour so that it changes about once an hour (PEXPIRE
  -- by the time left: PEXPIREAT by Redis's clock, and right when tests pin
  -- the clock).
  local we_old = we_s and we_s + 0 or 0
  local we = we_old
  if maxt > 0 then
    local e = mceil((maxt + window + skew) / HOUR)
    if e > we then we = e end
  end
  if we > we_old then hset[nh + 1], hset[nh + 2], nh = 'we', shared_text(we), nh + 2 end
  if nh > 0 then rcall('HSET', st, unpack(hset, 1, nh)) end
  if we > we_old or (rewrite and nkept + nadd > 0) then rcall('PEXPIRE', win, shared_text(we * HOUR - now)) end
  if crossing then
    rcall('PERSIST', st)
  elseif not durable and nh > 0 and (we > we_old or we_old == 0) then
    -- a new state, or a later expiry: else the TTL it has is right
    if we == 0 then we = mceil((now + window + skew) / HOUR) end
    rcall('PEXPIRE', st, shared_text(we * HOUR - now))
  end

  if crossing or ob then
    return {outs, total, capped and 1 or 0, crossing and action or '', id, rcall('LRANGE', kb .. 'o', 0, 99)}
  end
  return reply(total, capped, outs)
end

local results = {}
for a = 1, tonumber(ARGV[5]) do
  local ok, r = pcall(one, KEYS[a], ARGV[5 + a])
  if ok then
    results[a] = r
  elseif type(r) == 'table' and r.err then
    results[a] = {'!' .. r.err}
  else
    results[a] = {'!' .. tostring(r)} -- a Redis error as text, or a Lua runtime error
  end
end
return results
