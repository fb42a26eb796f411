-- Ingest a batch of verdict events for one or more accounts (one call
-- holds accounts of one Redis Cluster master, or of one slot; standalone
-- Redis takes any).
-- A Redis function (FUNCTION LOAD, Redis 7.0; script.go): its library is
-- loaded once, so a call pays for none of the definitions below (a script
-- run by EVALSHA made them all again, about 30 us a call).
-- Each account is atomic on its own and fails on its own: its part reads
-- what decides first and writes last, so that an error (a key of the
-- wrong type, say) leaves it as it was, and the other accounts of the call
-- go on. An account costs the same fixed handful of commands however many
-- events it has: one HMGET of the state; for an inline window (see
-- INLINE) one HSET; for a set, the window trim, ZCARD, ZMSCORE of the ids
-- (or, for a single event, ZADD NX, which learns whether it is new and
-- adds it at once), one ZADD; and writes only where something changed.
-- Statistics-only events do not come here (stats.lua).
--
-- Keys (KEYS): 1 per account, its state HASH <prefix>:{<account>}:s; its
--       other keys share the name but for the last letter (w window ZSET,
--       h history LIST, o outbox LIST, x v1 statistics ZSET, r ham ZSET),
--       and so its Cluster slot; or, for a call of many slots (see run),
--       the first account's only. The windows are not declared (ingest.go
--       tells why): they follow the batches in ARGV, one per account,
--       then the states not declared.
-- Arguments (ARGV):
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME): one clock for every
--         process, so that skewed hosts cannot count a trimmed id twice
-- ARGV[2] window (ms)   ARGV[3] future skew (ms)
-- ARGV[4] rebase the window's scores after (ms)   ARGV[5] number of accounts
-- ARGV[5+a] account a's batch, packed big-endian (one string: Lua makes
--   one string for it, and numbers unpack without parsing text):
--   threshold I4, cap I4, action B (1 suspend, 2 report; plus 4 with
--   the spam-rate rule), counting events I4 (0: an empty batch, which
--   reads the count);
--   per counting event 25 bytes: member c6 (id hash), time i8 (ms, signed),
--   kind B (direction*4+verdict), stream sequence I6 (0: no sample),
--   fingerprint c4;
--   with the spam-rate rule (see count_ham): rate in parts per million
--   I4, minimum spam I4, ham cap I4, outbound-only B (1: the window holds
--   outbound events only), ham events I4, then per ham event 14 bytes:
--   member c6, time i8;
--   then, read only on a crossing: id for a new suspension or report,
--   company, account, each I2+c0
-- then the accounts' windows, and the states not in KEYS
--
-- The window holds the counting events: member = id hash, score =
-- (time - base) * 16 + kind, where base (state field wb, in hours) keeps
-- the score within 32 bits so that the set stays in Redis's compact
-- encoding. It holds at most cap members, the newest by event time: the
-- stored count is exactly min(real count, cap), and cap > threshold keeps
-- every decision exact.
-- A window of at most INLINE events lives in the state itself, field wi:
-- its own base (I4, hours), then per event its member and score, packed
-- (c6 i4). Most addresses have a few events a day, and a key of their
-- own (a ZSET, with its expiry) cost them about as much again as the rest
-- of the count (a new key, its TTL and a check that none was left over;
-- then a trim, ZCARD and ZADD for each later event, where the inline
-- window costs one HSET). The window moves to the set when it outgrows
-- wi. wb is the set's base, and is there only with a set: a state with
-- wi and no wb has no set (a key left over from a deleted state is
-- ignored, and goes when the window moves there); one with both has
-- both, which happens only when a version before wi counted beside this
-- one (it knows no wi and writes wb with its set), and both are read and
-- written back as one. Readers (window.go) do the same.
--
-- A crossing is recorded by crossing.lua, which is put before this file.
--
-- An address that only appears in verdicts has no record: its state and
-- window carry a TTL and expire once past the window plus the skew. A
-- crossing (or any change through apply.lua) makes the record durable.
--
-- Returns, per account, one integer or string when nothing is to be
-- published (see reply); else
-- {outcomes, count, capped, crossing, id, pending outbox entries, rule}; or
-- {"!" .. error} when its part failed. outcomes has one
-- letter per counting event: c counted, d duplicate, l late (outside the
-- window or before the last reinstatement), k counted at the cap.
-- Globals cost a table lookup each time: the hot path uses locals. The
-- state's numbers are read by arithmetic (wb * HOUR, we_s + 0), which
-- converts the text once where tonumber converts it twice; a malformed
-- one fails the account's part. Tables cost more than commands here, so
-- the hot path makes few: per-event values live in arrays reused from one
-- account to the next, filled up to a count rather than cleared.
-- A function library's top level runs once, when it is loaded, and sees
-- no global but redis.register_function: bind() binds the globals the
-- functions use, on the first call.
local tonumber, rcall, mfloor, mceil, mmin, unpack_, ssub, sformat, sfind
local function bind()
  tonumber, rcall = _G.tonumber, redis.call
  mfloor, mceil, mmin = math.floor, math.ceil, math.min
  unpack_, ssub, sformat, sfind = struct.unpack, string.sub, string.format, string.find
end
-- The call's keys and arguments, its clock and its window (ms).
local KEYS, ARGV, now, window, skew, rebase_after
local HOUR = 3600000
-- Redis 7.0 turns a number argument of redis.call into text with "%.17g",
-- which costs about as much as a whole ZCARD: integers go as text made
-- with "%d" (about half that), and those that most accounts of a call
-- share (the trims' bounds, the expiry hours and times left: now is the
-- call's) are made once.
local TEXT -- a call's texts (new each call: the bounds move with now)
local function shared_text(n)
  local s = TEXT[n]
  if not s then s = sformat('%d', n); TEXT[n] = s end
  return s
end
local INLINE, INL = 6, '>c6i4' -- the most events wi holds (60 bytes: a hash
-- keeps its compact encoding up to 64-byte values), and one's packing
local SMP = '>I4c4I6' -- a sample: time (s), fingerprint, stream sequence
local SMPN = {SMP, SMP .. 'I4c4I6', SMP .. 'I4c4I6I4c4I6'} -- one to three, packed in one call

local function fail(msg) error({err = msg}) end
-- The events of the account being worked on, reused from one account to
-- the next (entries past n are stale and never read).
local EM, ET, EK, ES, EF = {}, {}, {}, {}, {} -- member, time, kind, sequence, fingerprint offset
-- ADD and HSET are filled up to a count (nadd, nh) rather than cleared.
local ADD, OUT, HSET = {}, {}, {} -- new events' indexes, outcome letters, HSET arguments
-- A library's tables live as long as it does, and Lua's collector walks
-- every live table each cycle: an account of more than BIG events (a
-- replay, a test) has them made anew after its call, so that a big one
-- does not slow every call after it (it cost about a fifth of a call).
local BIG, big = 2000, false
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
local function read_samples(smp_s, wlo)
  local n, changed = 0, false
  if smp_s then
    for i = 1, #smp_s - 13, 14 do
      local t, fp, seq = unpack_(SMP, smp_s, i)
      if t * 1000 > wlo then n = n + 1; SMT[n], SMF[n], SMQ[n] = t, fp, seq else changed = true end
    end
  end
  return n, changed
end

-- aupd v1's samples, "ms|fingerprint|seq" in smp:1..3, read the same way
-- when its window is rewritten.
local function read_v1_samples(st, wlo)
  local n = 0
  for _, v in ipairs(rcall('HMGET', st, 'smp:1', 'smp:2', 'smp:3')) do
    local t, fp, seq = string.match(v or '', '^(%d+)|([^|]*)|(%d+)$')
    if t then
      t = mfloor(tonumber(t) / 1000)
      if t * 1000 > wlo then n = n + 1; SMT[n], SMF[n], SMQ[n] = t, ssub(fp .. '0000', 1, 4), tonumber(seq) end
    end
  end
  return n, true
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

-- The reply of an account with nothing to publish. At most one counting
-- event: one integer, ((count + 1) * 2 + capped) * 8 + outcome (0 none,
-- 1 c, 2 d, 3 l, 4 k), the cheapest reply to make and to read. More: a
-- string, count i4, capped B, then the outcome letters.
local CODE = {c = 1, d = 2, l = 3, k = 4}
local function reply(total, capped, outs)
  if #outs <= 1 then return ((total + 1) * 2 + (capped and 1 or 0)) * 8 + (CODE[outs] or 0) end
  return struct.pack('>i4B', total, capped and 1 or 0) .. outs
end

-- The account being worked on, shared by the steps of one(): its window
-- key (win); the window's score base (ms); wlo, at or before which events
-- do not count; whether the address is new (fresh); the count before
-- this batch; the new events (nadd of them, their indexes in ADD); the
-- newest event time the window holds after this batch (maxt); what the
-- window told of the ids (known: ZMSCORE's answer, in trim mode; in the
-- modes that read the window whole, kmode, its events that still count,
-- nkept of them, see KM); whether the one event was added already
-- (added1); the samples read (ns, nil: not read) and whether they
-- changed; and what a crossing read (x).
local win, base, wlo, fresh
local count, nadd, maxt
local known, kmode, nkept, added1
local ns, smp_changed, x
-- The inline window (wi) as read (inl_s, nil: none) and the events it
-- holds (ninl, whether they count or not), whether this batch leaves the
-- window inline (inline), whether the window is being rewritten on a new
-- base (rebase: rewrite mode), and whether a set was read (from_set: it
-- goes, or is written anew).
local inl_s, ninl, inline, rebase, from_set
-- Whether the state is a record's (it has created): read only of a state
-- without a window (nil: not read; a crossing makes it durable anyway).
local created
-- The kept events: member, time, kind, 1..nkept (reused like EM; a
-- table each cost more than the commands an inline window saves); kidx,
-- member -> true, once a set is read (a window of any size: decide()
-- looks ids up there; an inline one's few are scanned).
local KM, KT, KK, kidx = {}, {}, {}, nil

-- wi's base (ms), and whether its events were read into KM (loaded):
-- counting and deciding one event need only their scores, and ids are
-- found in wi itself, which makes no string or table (each one costs
-- Lua's collector as much as a command costs Redis).
local ib, loaded

-- Whether the id m is among wi's events that still count: found where an
-- event starts (offset 5, then every 10 bytes), its time after wlo.
local function inline_has(m)
  local from = 5
  while true do
    local p = sfind(inl_s, m, from, true)
    if not p then return false end
    if (p - 5) % 10 == 0 and ib + mfloor(unpack_('>i4', inl_s, p + 6) / 16) > wlo then return true end
    from = p + 1
  end
end

local function is_kept(m)
  if kidx then return kidx[m] end
  if inl_s and not loaded then return inline_has(m) end
  for i = 1, nkept do
    if KM[i] == m then return true end
  end
  return false
end

-- Keep an event of the window read (score sc on base old, ms) if it
-- still counts.
local function keep(m, sc, old)
  local d = mfloor(sc / 16)
  local t = old + d
  if t > wlo and not (kidx and kidx[m]) then
    count = count + 1
    KM[count], KT[count], KK[count] = m, t, sc - d * 16
    if kidx then kidx[m] = true end
    if t > maxt then maxt = t end
  end
end

-- The set's members into the kept events, on the base old (ms).
local function read_set(old)
  from_set, kidx = true, {}
  for i = 1, count do kidx[KM[i]] = true end
  local z = rcall('ZRANGE', win, 0, -1, 'WITHSCORES')
  if #z > 2 * BIG then big = true end
  for j = 1, #z, 2 do keep(ssub(z[j], 1, 6), tonumber(z[j + 1]), old) end
end

-- Inline mode: the window is wi (inl_s); what still counts is counted,
-- from the scores alone, and kept (KM) only when needed (load_inline).
local function read_inline()
  ib, loaded, ninl = unpack_('>I4', inl_s) * HOUR, false, 0
  for i = 11, #inl_s - 3, 10 do
    local t = ib + mfloor(unpack_('>i4', inl_s, i) / 16)
    ninl = ninl + 1
    if t > wlo then
      count = count + 1
      if t > maxt then maxt = t end
    end
  end
end

local function load_inline()
  if loaded or not inl_s then return end
  loaded = true
  local c = 0
  for i = 5, #inl_s - 9, 10 do
    local m, sc = unpack_(INL, inl_s, i)
    local d = mfloor(sc / 16)
    if ib + d > wlo then
      c = c + 1
      KM[c], KT[c], KK[c] = m, ib + d, sc - d * 16
    end
  end
end

-- An inline window, read in inline mode, or in rewrite mode when its
-- base is too old, or when a set is beside it: the state has wb, which
-- aupd writes only with a set, so an earlier version counted there
-- during an upgrade (it knows no wi); both are read, and rewritten as one.
local function read_inline_window(n)
  kmode = true
  read_inline()
  if base then
    load_inline()
    read_set(base)
  end
  if from_set or (n > 0 and now - ib > rebase_after) then
    rebase, base = true, mfloor(now / HOUR) * HOUR
  else
    base = ib
  end
  nkept = count
end

-- Rewrite mode: the window's base is too old for compact scores, or
-- absent: a window written by aupd v1, whose scores are absolute and
-- whose members are 8 bytes (their first 6 are the same id hash) and
-- whose samples are in smp:1..3. What still counts is kept, to be written
-- back on a new base. Returns whether the state is aupd v1's.
local function read_for_rewrite(st, record)
  rebase, kmode = true, true
  -- aupd v1 always wrote created, never wb
  local v1 = record and not base and rcall('HEXISTS', st, 'smp:1') == 1
  read_set(base or 0)
  nkept = count
  base = mfloor(now / HOUR) * HOUR
  if v1 then ns, smp_changed = read_v1_samples(st, wlo) end
  return v1
end

-- Trim mode, the usual one. Members at or below the bound no longer
-- count: removing them first changes nothing a later step or reader sees,
-- even when this account's part fails after it. The count is then ZCARD.
-- One event, the most common batch, is decided here: ZADD NX both learns
-- whether it is new and adds it, so a crossing it may make is read first
-- (with a count over threshold, the least count that may cross); its
-- outcome letter is returned.
-- More are looked up with ZMSCORE, in parts past 4000 (Lua unpacks at
-- most 8000 values at once), for decide().
local function trim_window(st, n, threshold, cap, aup)
  rcall('ZREMRANGEBYSCORE', win, '-inf', shared_text((wlo - base) * 16 + 15))
  count = rcall('ZCARD', win)
  if n == 1 then
    local t = ET[1]
    if t <= wlo then return 'l' end
    if count + 1 > threshold and not aup then x = crossing_read(st) end
    if rcall('ZADD', win, 'NX', sformat('%d', (t - base) * 16 + EK[1]), EM[1]) == 0 then return 'd' end
    added1, nadd, ADD[1], maxt = true, 1, 1, t
    return count + 1 > cap and 'k' or 'c'
  elseif n > 1 then
    known = rcall('ZMSCORE', win, unpack(EM, 1, mmin(n, 4000)))
    for i = 4001, n, 4000 do
      local part = rcall('ZMSCORE', win, unpack(EM, i, mmin(i + 3999, n)))
      for j = 1, #part do known[i + j - 1] = part[j] end
    end
  end
end

-- Decide each event: late, duplicate, counted, or counted at the cap.
-- Returns the outcome letters.
local function decide(n, cap)
  local seen, outs
  for j = 1, n do
    local m, t = EM[j], ET[j]
    local r
    if t <= wlo then
      r = 'l'
    elseif (seen and seen[m]) or (kmode and is_kept(m)) or (known and known[j]) then
      r = 'd'
    else
      if n > 1 then
        seen = seen or {}
        seen[m] = true
      end
      nadd = nadd + 1
      ADD[nadd] = j
      if count + nadd > cap then r = 'k' else r = 'c' end
      if t > maxt then maxt = t end
    end
    if n == 1 then outs = r else OUT[j] = r end
  end
  if n > 1 then outs = table.concat(OUT, '', 1, n) end
  return outs or ''
end

-- Evidence samples: up to three, preferring different fingerprints, read
-- only when they may change.
local function pick_samples(b, smp_s)
  for k = 1, nadd do
    local j = ADD[k]
    if ES[j] > 0 then
      if not ns then ns, smp_changed = read_samples(smp_s, wlo) end
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

-- The crossing's counts by direction (outbound, inbound, complaint): the
-- kept window after this batch, its newest cap members.
local function direction_counts(cap)
  local all = {}
  if kmode then
    load_inline()
    for e = 1, nkept do all[e] = {KT[e], KK[e]} end
  else
    local z = rcall('ZRANGE', win, 0, -1, 'WITHSCORES') -- trimmed already
    for j = 1, #z, 2 do
      local sc = tonumber(z[j + 1])
      local d = mfloor(sc / 16)
      all[#all + 1] = {base + d, sc - d * 16}
    end
  end
  if not added1 then
    for k = 1, nadd do local j = ADD[k]; all[#all + 1] = {ET[j], EK[j]} end
  end
  table.sort(all, function(a, c) return a[1] > c[1] end)
  local counts = {0, 0, 0}
  for i = 1, mmin(#all, cap) do
    local dir = mfloor(all[i][2] / 4) + 1
    counts[dir] = counts[dir] + 1
  end
  return counts
end

-- The spam-rate rule: the account's outbound ham, kept like the window
-- (its own set, key ...:r, member = id hash, score = time in ms, trimmed
-- to the window), at most the ham cap, which is enough for every decision
-- to be exact (rules.SpamRate.HamCap). Its section of the batch: returns
-- the rule's figures and the position after it.
local HM, HT = {}, {}
local function read_rate(b, pos)
  local r = {}
  r.ppm, r.min, r.cap, r.outonly, r.n, pos = unpack_('>I4I4I4BI4', b, pos)
  if r.n > BIG then big = true end
  for j = 1, r.n do HM[j], HT[j], pos = unpack_('>c6i8', b, pos) end
  return r, pos
end

-- Add the batch's ham to the account's set (by id: the same one never
-- counts twice) and return how much it holds. First of the account's
-- writes, and repeated alike when the batch is: a failure here leaves the
-- window as it was.
local function count_ham(st, r)
  local key = ssub(st, 1, -2) .. 'r'
  rcall('ZREMRANGEBYSCORE', key, '-inf', sformat('%d', wlo))
  local z, seen = {}, {}
  for i = 1, r.n, 4000 do
    local part = rcall('ZMSCORE', key, unpack(HM, i, mmin(i + 3999, r.n)))
    for k = 1, #part do
      local j = i + k - 1
      local m, t = HM[j], HT[j]
      if t > wlo and not part[k] and not seen[m] then
        seen[m] = true
        z[#z + 1], z[#z + 2] = sformat('%d', t), m
      end
    end
  end
  if #z > 0 then
    zadd(key, z)
    -- past every member's end (no event is more than skew ahead)
    rcall('PEXPIRE', key, shared_text(window + 2 * skew))
  end
  local card = rcall('ZCARD', key)
  if card > r.cap then
    rcall('ZREMRANGEBYRANK', key, '0', sformat('%d', card - r.cap - 1))
    card = r.cap
  end
  return card
end

-- Whether the spam-rate rule holds after this batch: the outbound spam
-- (the count when the window holds outbound events only, else read from
-- it) against the ham; sets r.spam and r.ham for the record.
local function rate_holds(r, ham, total, cap)
  if total < r.min then return false end
  r.spam, r.ham = r.outonly == 1 and total or direction_counts(cap)[1], ham
  return r.spam >= r.min and r.spam * 1e6 > r.ppm * (r.spam + ham)
end

-- A crossing's facts (see crossing.lua), once what it reads is read: the
-- state it changes, the samples (smp_s), and the strings of the batch b
-- from pos on. The count rule names the crossing when both hold; rate is
-- the spam-rate rule's figures when it holds, recorded when it names it.
local function crossing_facts(st, smp_s, b, pos, act, threshold, cap, total, capped, rate)
  x = x or crossing_read(st)
  if not ns then ns, smp_changed = read_samples(smp_s, wlo) end
  local seqs = {}
  for i = 1, ns do seqs[i] = sformat('%.0f', SMQ[i]) end
  local id, company, account = unpack_('>I2c0I2c0I2c0', b, pos)
  return {id = id, action = act == 1 and 'suspend' or 'report', at = now, from = wlo,
    rule = total > threshold and 'spam_count' or 'spam_rate',
    rate = total <= threshold and rate or nil, -- (the ham kept is cut for the rate, not for this)
    account = account, company = company, threshold = threshold, count = total, capped = capped,
    counts = direction_counts(cap), samples = seqs}
end

-- Write an inline window of the kept events and the new ones, when they
-- fit (see INLINE); returns nh, after wi's field, or nil when they do not
-- fit. Nothing is written when only the time moved on: wi may hold events
-- that no longer count, which its readers skip. A set read goes, and its
-- base with it (and aupd v1's leftovers).
local PK = {} -- the pieces of wi (reused)
local function write_inline(st, v1, cap)
  local total = count + nadd
  if total > INLINE or total > cap then return nil end
  inline = true
  if nadd == 0 and not rebase and not fresh then return 0 end
  local del -- (no table on the usual path)
  if from_set then
    rcall('DEL', win, ssub(st, 1, -2) .. 'x')
    del = v1 and {'wb', 'smp:1', 'smp:2', 'smp:3'} or {'wb'}
  end
  if total == 0 and inl_s then del = del or {}; del[#del + 1] = 'wi' end
  if del then rcall('HDEL', st, unpack(del)) end
  if total == 0 then return 0 end
  local i = 1
  if inl_s and not rebase and nkept == ninl then
    PK[1] = inl_s -- every event it holds still counts: the new ones follow
  else
    load_inline()
    PK[1] = struct.pack('>I4', base / HOUR)
    for e = 1, nkept do i = i + 1; PK[i] = struct.pack(INL, KM[e], (KT[e] - base) * 16 + KK[e]) end
  end
  for k = 1, nadd do
    local j = ADD[k]
    i = i + 1; PK[i] = struct.pack(INL, EM[j], (ET[j] - base) * 16 + EK[j])
  end
  HSET[1], HSET[2] = 'wi', table.concat(PK, '', 1, i)
  return 2
end

-- Write the window: inline when it fits, else the set: rebuilt on its
-- new base in rewrite mode (and aupd v1's leftovers deleted) or when it
-- moves out of wi, else the new events added; then cut to cap.
-- Returns nh, after the base's field when it changed.
local function write_window(st, v1, cap)
  if kmode then
    local nh = write_inline(st, v1, cap)
    if nh then return nh end
  end
  local nh, z = 0, {}
  if kmode and not fresh then
    load_inline()
    rcall('DEL', win, ssub(st, 1, -2) .. 'x')
    for e = 1, nkept do z[2 * e - 1], z[2 * e] = sformat('%d', (KT[e] - base) * 16 + KK[e]), KM[e] end
    if v1 then rcall('HDEL', st, 'smp:1', 'smp:2', 'smp:3') end
  end
  if not added1 then
    for k = 1, nadd do
      local j = ADD[k]
      z[#z + 1] = sformat('%d', (ET[j] - base) * 16 + EK[j]); z[#z + 1] = EM[j]
    end
  end
  if #z > 0 then
    zadd(win, z)
    -- A new address has no window: one left over (its state deleted
    -- without it) holds more than was just added, and goes.
    if fresh and rcall('ZCARD', win) ~= nadd then
      rcall('DEL', win)
      zadd(win, z)
    end
    if rebase or fresh or inl_s then HSET[1], HSET[2], nh = 'wb', shared_text(base / HOUR), 2 end
  end
  if count + nadd > cap then
    rcall('ZREMRANGEBYRANK', win, '0', sformat('%d', count + nadd - cap - 1))
  end
  -- (after the set's writes, which may fail: the key of the wrong type)
  if inl_s then rcall('HDEL', st, 'wi') end
  return nh
end

-- The state's writes: the samples, the expiry hour we (from we_old),
-- and the HSET of nh fields. An address without a durable record keeps a
-- TTL: made when the state is (created is known false then), and later
-- moved on with GT, which leaves a key without a TTL (a durable record)
-- as it is.
local function write_state(st, nh, we_old, we, crossing)
  if smp_changed then
    if ns > 0 then
      local packed = struct.pack(SMPN[mmin(ns, 3)], SMT[1], SMF[1], SMQ[1], SMT[2], SMF[2], SMQ[2], SMT[3], SMF[3], SMQ[3])
      HSET[nh + 1], HSET[nh + 2], nh = 'smp', packed, nh + 2
    else
      rcall('HDEL', st, 'smp')
    end
  end
  if we > we_old then HSET[nh + 1], HSET[nh + 2], nh = 'we', shared_text(we), nh + 2 end
  if nh > 0 then rcall('HSET', st, unpack(HSET, 1, nh)) end
  if not inline and (we > we_old or (kmode and nkept + nadd > 0)) then rcall('PEXPIRE', win, shared_text(we * HOUR - now)) end
  if crossing then
    rcall('PERSIST', st)
  elseif not created and nh > 0 and (we > we_old or we_old == 0) then
    -- a new state, or a later expiry: else the TTL it has is right
    if we == 0 then we = mceil((now + window + skew) / HOUR) end
    if created == false then
      rcall('PEXPIRE', st, shared_text(we * HOUR - now))
    else
      rcall('PEXPIRE', st, shared_text(we * HOUR - now), 'GT')
    end
  end
end

-- Read the window in the mode it needs: a new address's (fresh), one
-- to rewrite on a new base, an inline one, or a set to trim. Returns
-- whether the state is aupd v1's, and the outcome letter trim_window
-- decided, if any.
local function read_window(st, n, threshold, cap, aup)
  fresh, from_set = false, false
  if inl_s then
    read_inline_window(n)
  elseif n > 0 and not base then
    -- no window: a new address's state, or a record's (created), or
    -- none, whose window, if any, is aupd v1's
    created = rcall('HEXISTS', st, 'created') == 1
    if created then return read_for_rewrite(st, true) end
    -- a new address: nothing to carry over (write_window sees to a
    -- window left over)
    kmode, nkept, base, fresh = true, 0, mfloor(now / HOUR) * HOUR, true
  elseif n > 0 and now - base > rebase_after then
    return read_for_rewrite(st, false)
  elseif base then
    return false, trim_window(st, n, threshold, cap, aup)
  end
  return false
end

-- One account: its state key, its window key and its packed batch. It reads what decides
-- (the state, the window), decides, and writes last.
local function one(st, w, b)
  win = w
  local threshold, cap, act, n, pos = unpack_('>I4I4BI4', b)
  if n > BIG then big = true end
  for j = 1, n do
    EM[j], ET[j], EK[j], ES[j] = unpack_('>c6i8BI6', b, pos)
    EF[j] = pos + 21
    pos = pos + 25
  end
  local r -- the spam-rate rule, when on
  if act > 4 then act, r, pos = act - 4, read_rate(b, pos) end
  -- (each field asked costs about a third of a command: created is
  -- asked only of a state without a window, see read_window)
  local hv = rcall('HMGET', st, 'aup', 'report', 'floor', 'smp', 'wb', 'we', 'ob', 'wi')
  local aup, report, floor_s, smp_s, wb, we_s, ob = hv[1], hv[2], hv[3], hv[4], hv[5], hv[6], hv[7]
  inl_s, inline, rebase, created = hv[8], false, false, nil
  if inl_s and #inl_s < 4 then fail('malformed inline window') end
  local lo, floor = now - window, floor_s and floor_s + 0 or 0
  wlo = floor > lo and floor or lo
  base = wb and wb * HOUR or nil
  count, nadd, maxt, added1, ns, smp_changed = 0, 0, 0, false, nil, false
  known, kmode, kidx, x = nil, false, nil, nil
  local rep = act ~= 1 and report -- a report made, for the report action
  local ham = r and count_ham(st, r)
  local v1, outs = read_window(st, n, r and mmin(threshold, r.min - 1) or threshold, cap, aup)
  outs = outs or decide(n, cap)
  local total, capped = mmin(count + nadd, cap), count + nadd > cap
  -- A crossing holds off the next while a suspension is in force, or
  -- while a report's rule holds (once it no longer does, the next
  -- crossing is reported again); so do the samples.
  local rated = r and not aup and rate_holds(r, ham, total, cap)
  local reported = report and (count > threshold or rated)
  if not (aup or reported or samples_final(smp_s, wlo)) then pick_samples(b, smp_s) end
  local crossing = (total > threshold or rated) and not aup and not (rep and reported)
  local rec
  if crossing then rec = crossing_facts(st, smp_s, b, pos, act, threshold, cap, total, capped, rated and r) end
  local nh = 0
  if kmode or (nadd > 0 and not added1) or count + nadd > cap then nh = write_window(st, v1, cap) end
  if report and not reported and not (crossing and act ~= 1) then rcall('HDEL', st, 'report') end
  if crossing then nh = crossing_write(st, x, rec, HSET, nh) end
  -- The expiry hour: past the newest event plus the window and the
  -- skew, rounded up, so that it changes about once an hour.
  local we_old = we_s and we_s + 0 or 0
  local we = maxt > 0 and mceil((maxt + window + skew) / HOUR) or 0
  if we < we_old then we = we_old end
  if nh > 0 or smp_changed or we > we_old or kmode or crossing then
    write_state(st, nh, we_old, we, crossing)
  end
  if crossing or ob then
    return {outs, total, capped and 1 or 0, crossing and rec.action or '', rec and rec.id or '',
      rcall('LRANGE', ssub(st, 1, -2) .. 'o', 0, 99), rec and rec.rule or ''}
  end
  return reply(total, capped, outs)
end

-- The accounts, each caught on its own: one pcall covers them all until
-- one fails, which gets its error, and the next ones go on in a new one.
-- On a Redis Cluster a call holds the accounts of one master, of many
-- slots (the function is flagged allow-cross-slot-keys): only the first
-- account's state is declared, to route the call, and every other key
-- follows the batches. An account whose slot has moved, or is moving,
-- since aupd read the slot map fails at the first command on a key this
-- node does not serve ("non local key", or another refusal: store's
-- clusterRefused), and aupd runs it again in a call of its own slot.
-- That is safe because no such failure can come between writes that
-- belong together: the keys a crossing writes are read first
-- (crossing_read), the writes before them are the window's, and
-- counting is idempotent by event id.
local results, naccounts, cur
local function run(from)
  for a = from, naccounts do
    cur = a
    results[a] = one(KEYS[a] or ARGV[5 + 2 * naccounts + a - #KEYS], ARGV[5 + naccounts + a], ARGV[5 + a])
  end
end

local function ingest(keys, args)
  if not rcall then bind() end
  KEYS, ARGV, TEXT = keys, args, {}
  now = tonumber(args[1])
  if now == 0 then
    local t = rcall('TIME')
    now = tonumber(t[1]) * 1000 + mfloor(tonumber(t[2]) / 1000)
  end
  window, skew, rebase_after = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  results, naccounts, cur = {}, tonumber(args[5]), 0
  local from = 1
  while from <= naccounts do
    local ok, r = pcall(run, from)
    if ok then break end
    if type(r) == 'table' and r.err then
      results[cur] = {'!' .. r.err}
    else
      results[cur] = {'!' .. tostring(r)} -- a Redis error as text, or a Lua runtime error
    end
    from = cur + 1
  end
  if big then
    EM, ET, EK, ES, EF, ADD, OUT, HSET, HM, HT = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
    KM, KT, KK = {}, {}, {}
    big = false
  end
  return results
end

-- FUNCTION, the function's name, is set before this file (script.go).
redis.register_function{function_name = FUNCTION, callback = ingest, flags = {'allow-cross-slot-keys'}}
