-- Count one message an authenticated account sent (Postfix's
-- END-OF-MESSAGE policy request) against its volume limits, and act on a
-- crossing: a throttle, a suspension or a report. One call, atomic: it
-- reads everything first and writes last. A Redis function (FUNCTION
-- LOAD, as ingest.lua): its library is loaded once, so that a call does
-- not define its functions again; crossing.lua is put before it.
--
-- KEYS[1] the account's state HASH <prefix>:{<account>}:s
-- KEYS[2] its volume record <prefix>:{<account>}:v (STRING)
-- KEYS[3] its throttle <prefix>:{<account>}:vt (STRING: "<until ms> <limit
--         name>"), whose marker is the state's field vt; a crossing
--         writes its history and outbox, the state's name ending in h and o
--         (one Cluster slot)
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME)
-- ARGV[2] the state's version the sender check allowed, as text; -1: none
--         was made (answer "changed" unless the message is a duplicate)
-- ARGV[3] the message's id: 4 bytes, from Postfix's instance and queue
--         id, the same when Postfix asks again about the message; "": none
-- ARGV[4] its recipients
-- ARGV[5] the client: its IPv4 address (4 bytes) or its IPv6 address's
--         /64 prefix (8 bytes); "": none
-- ARGV[6] the account's limits, packed big-endian:
--   ring sum I2, limit sum B, rings B, limits B, per ring: bucket (ms) I4,
--   kind B (1 messages, 2 recipients); per limit: ring B, max I2, action B
--   (1 throttle, 2 suspend, 3 reported throttle, 4 reported suspension);
--   per limit: name I2+c0
-- ARGV[7] read only on a crossing: id for a suspension or report,
--   company, account, each I2+c0, then the spam count's window I6 (ms):
--   its samples within it are the suspension's evidence
-- ARGV[8] the record's expiry (ms): the longest window
--
-- The record (docs/redis.md, "Volume"): ring sum I2, limit sum B, time of
-- the last count I4 (s), above B (bit i: limit i is above its max and
-- its crossing was handled), 6 recent message ids I4 (newest first, 0
-- empty), then per ring 12 buckets I2 (bucket n of width g counts the
-- messages or recipients sent in [n*g, (n+1)*g), in slot n % 12; counts
-- stop at 65535), then the clients: count B, per client its length B and
-- bytes, newest first, up to 3 and 27 bytes: with two rings the record is
-- at most 108 bytes.
--
-- Returns {outcome, ob, crossings...}: outcome 1 counted, 2 duplicate, 3
-- throttled (then the throttle's until and limit name follow), 4 changed,
-- 5 new (ARGV[2] -2: only asked whether it is a duplicate); ob 1 when the
-- account's outbox holds entries to publish; per crossing 6 values: limit
-- index (0-based), action code, count, since (ms), until (ms, a throttle's
-- end; 0), the suspension's or report's id ("").
-- Lua calls cost more than Redis commands here (a C function call,
-- struct's above all, costs about as much as a small command): the hot
-- path makes few. Formats are literals, the record is read and written in
-- one unpack and one pack, floors are arithmetic (x - x % g), and the
-- numbers Redis passes as text are compared as text or used in arithmetic,
-- which converts them, rather than through tonumber.
local NSLOT, MAXC, NIDS, MAXADDR, ADDRBYTES = 12, 65535, 6, 3, 27
local ID0 = 4 -- R[ID0 + i] is recent id i
local S0 = ID0 + NIDS -- R[S0 + (r - 1) * NSLOT + s] is slot s of ring r
local HEAD = 8 + 4 * NIDS -- the record's bytes before the rings
local BIT = {1, 2, 4, 8, 16, 32, 64, 128} -- limit l's bit in above
-- Formats by count: constants, not tables a call would make.
local RFMT = {'>I4B', '>I4BI4B', '>I4BI4BI4B', '>I4BI4BI4BI4B'}
local LFMT = {'>BI2B', '>BI2BBI2B', '>BI2BBI2BBI2B', '>BI2BBI2BBI2BBI2B', '>BI2BBI2BBI2BBI2BBI2B',
  '>BI2BBI2BBI2BBI2BBI2BBI2B', '>BI2BBI2BBI2BBI2BBI2BBI2BBI2B', '>BI2BBI2BBI2BBI2BBI2BBI2BBI2BBI2B'}
local RECFMT = {'>I2BI4BI4I4I4I4I4I4I2I2I2I2I2I2I2I2I2I2I2I2',
  '>I2BI4BI4I4I4I4I4I4I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2',
  '>I2BI4BI4I4I4I4I4I4I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2',
  '>I2BI4BI4I4I4I4I4I4I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2I2'}

-- A library's top level sees no globals: bind() binds those the functions
-- use, on the first call.
local rcall, unpack_, pack, byte, ssub
local function bind()
  rcall, unpack_, pack, byte, ssub = redis.call, struct.unpack, struct.pack, string.byte, string.sub
end

-- The call's: its keys, arguments and clock; the account's limits (spec;
-- per ring RS: bucket width (ms), kind; per limit LS: ring (0-based),
-- max, action; the record's format FMT of NVAL values); the record as it
-- is (R: R[1] ring sum, R[2] limit sum, R[3] the last count's time, R[4]
-- above, then the ids, then the slots; ap where the addresses start in
-- rec), the last count's time (ms), and what a suspension read (x, smp).
local st, vkey, tkey, ARGV, now
local spec, nrings, nlimits, RS, LS, FMT, NVAL
local rec, R, ap, last, x, smp
-- W[r]: ring r's bucket now; W[4 + r] and W[8 + r]: its count without and
-- with the message. One table for the library's life, of a fixed size,
-- rewritten by each call: a table of the call's would cost its allocation,
-- and these indexes past the record's values in R would grow R's hash part.
local W = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

-- The limits, unpacked once per spec: a provider has few (its own and
-- its companies' overrides), and SPECS keeps at most 64, starting afresh
-- past that. Names come last: only a crossing reads them.
local SPECS, NSPECS = {}, 0
local function read_limits()
  local c = SPECS[spec]
  if not c then
    local ringsum, limitsum, nr, nl, pos = unpack_('>I2BBB', spec)
    local rs = {unpack_(RFMT[nr], spec, pos)}
    c = {ringsum, limitsum, nr, nl, rs, {unpack_(LFMT[nl], spec, rs[2 * nr + 1])}}
    if NSPECS >= 64 then SPECS, NSPECS = {}, 0 end
    SPECS[spec], NSPECS = c, NSPECS + 1
  end
  nrings, nlimits, RS, LS = c[3], c[4], c[5], c[6]
  NVAL, FMT = S0 + NSLOT * nrings, RECFMT[nrings]
  return c[1], c[2]
end

-- The record as it is. A record of other rings keeps its ids and starts
-- its counts and addresses afresh.
local function read_record(ringsum, limitsum)
  rec, ap = rcall('GET', vkey), nil
  if rec and byte(rec, 1) * 256 + byte(rec, 2) == ringsum and #rec > HEAD + 2 * NSLOT * nrings then
    R = {unpack_(FMT, rec)}
    ap = R[NVAL + 1]
  elseif rec and #rec >= HEAD then
    R = {unpack_('>I2BI4BI4I4I4I4I4I4', rec)}
    R[1], R[4] = ringsum, 0
    for i = S0 + 1, NVAL do R[i] = 0 end
  else
    R = {ringsum, limitsum, 0, 0}
    for i = ID0 + 1, NVAL do R[i] = 0 end
  end
  if R[2] ~= limitsum then R[2], R[4] = limitsum, 0 end
  last = R[3] * 1000 -- in ms; stored in seconds, which bucket boundaries (whole seconds) allow
end

-- Move every ring to now (the buckets between the last count and now are
-- empty; a clock that went back counts into the newest bucket), and add
-- the message to its current bucket.
local function move_rings(nrcpt)
  for r = 1, nrings do
    local g, base = RS[2 * r - 1], S0 + (r - 1) * NSLOT
    local n, l = (now - now % g) / g, (last - last % g) / g
    if n < l then n = l end
    local to = n
    if to > l + NSLOT then to = l + NSLOT end
    for k = l + 1, to do R[base + k % NSLOT + 1] = 0 end
    W[r] = n
    local t = 0
    for i = base + 1, base + NSLOT do t = t + R[i] end
    local slot = base + n % NSLOT + 1
    local old = R[slot]
    local new = old + (RS[2 * r] == 1 and 1 or nrcpt)
    if new > MAXC then new = MAXC end
    R[slot] = new
    W[4 + r], W[8 + r] = t, t - old + new
  end
end

-- The crossings: limits above their max that were not. A limit back
-- within its max before this message is no longer above it.
local function find_crossings()
  local above, crossings = R[4], nil
  for l = 1, nlimits do
    local r, max, bit = LS[3 * l - 2] + 1, LS[3 * l - 1], BIT[l]
    local was = above % (2 * bit) >= bit
    if was and W[4 + r] <= max then above = above - bit; was = false end
    if W[8 + r] > max and not was then
      above = above + bit
      crossings = crossings or {}
      crossings[#crossings + 1] = {l = l, r = r, count = W[8 + r]}
    end
  end
  R[4] = above
  if now > last then R[3] = (now - now % 1000) / 1000 end
  return crossings
end

-- A crossing's window (the start of its oldest bucket), its start (the
-- oldest bucket that counts) and, for a throttle, its end: when enough
-- of the oldest buckets have left the window for the count to be within
-- the max again.
local function span(c, max)
  local g, n, base = RS[2 * c.r - 1], W[c.r], S0 + (c.r - 1) * NSLOT
  local since, til, left = 0, 0, c.count
  for k = n - NSLOT + 1, n do -- oldest first
    local v = R[base + k % NSLOT + 1]
    if since == 0 and v > 0 then since = k * g end
    left = left - v
    if til == 0 and left <= max then til = (k + NSLOT) * g end
  end
  c.from, c.since, c.til = (n - NSLOT + 1) * g, since, til
end

-- A limit's name: names come last in the limits, and only a crossing
-- reads them.
local function name(l)
  local p, n = LS[3 * nlimits + 1], nil
  for _ = 1, l do n, p = unpack_('>I2c0', spec, p) end
  return n
end

-- What the crossings do: one suspension (or report of one) at most, the
-- first suspend limit crossed, unless one is in force (aup); a throttle,
-- the longest.
local function pick(crossings, aup)
  local throttle, suspend
  for _, c in ipairs(crossings) do
    local a = LS[3 * c.l]
    span(c, LS[3 * c.l - 1])
    if a == 1 and (not throttle or c.til > throttle.til) then throttle = c end
    if (a == 2 or a == 4) and not suspend and not aup then suspend = c end
  end
  return throttle, suspend
end

-- The clients of the record's addresses, as text: an IPv4 address, an
-- IPv6 /64 (Go writes it canonically when it decodes the record).
local function clients(addrs)
  local out, p = {}, 2
  for i = 1, byte(addrs, 1) do
    local n = byte(addrs, p)
    local a = ssub(addrs, p + 1, p + n)
    if n == 4 then
      out[i] = string.format('%d.%d.%d.%d', byte(a, 1, 4))
    else
      out[i] = string.format('%x:%x:%x:%x::/64', unpack_('>I2I2I2I2', a))
    end
    p = p + 1 + n
  end
  return out
end

-- The spam count's samples within its window (smp: 14 bytes each, time
-- in s, fingerprint, stream sequence), for the notice's evidence.
local function samples(window)
  local out = {}
  for i = 1, #(smp or '') - 13, 14 do
    local t, _, seq = unpack_('>I4c4I6', smp, i)
    if t * 1000 > now - window then out[#out + 1] = string.format('%.0f', seq) end
  end
  return out
end

-- Record the suspension (or its report) of crossing c with crossing.lua;
-- returns its id.
local function suspension(c, addrs)
  local id, company, account, window = unpack_('>I2c0I2c0I2c0I6', ARGV[7])
  -- the same window's other count, when a ring of the other kind has it
  local msgs, rcpts = -1, -1
  for r = 1, nrings do
    if RS[2 * r - 1] == RS[2 * c.r - 1] then
      if RS[2 * r] == 1 then msgs = W[8 + r] else rcpts = W[8 + r] end
    end
  end
  local hset = {}
  local nh = crossing_write(st, x, {
    id = id, action = LS[3 * c.l] == 2 and 'suspend' or 'report', rule = 'volume:' .. name(c.l),
    at = now, from = c.from, account = account, company = company,
    threshold = LS[3 * c.l - 1], count = c.count, capped = false, counts = {0, 0, 0}, samples = samples(window),
    volume = {limit = name(c.l), kind = RS[2 * c.r] == 1 and 'messages' or 'recipients', window = RS[2 * c.r - 1] * NSLOT,
      messages = msgs, recipients = rcpts, since = c.since, clients = clients(addrs)},
  }, hset, 0)
  rcall('HSET', st, unpack(hset, 1, nh))
  rcall('PERSIST', st)
  return id
end

-- The record's ids with this message's first, and its client addresses:
-- this one first, then the others, as long as they fit (the usual case,
-- the same client again, keeps them as they are). Returns the addresses.
local function write_record(idn, client)
  if idn ~= 0 then
    for i = ID0 + NIDS, ID0 + 2, -1 do R[i] = R[i - 1] end
    R[ID0 + 1] = idn
  end
  local addrs = '\0'
  if ap then addrs = ssub(rec, ap) end
  local nc = #client
  if (nc == 4 or nc == 8) and not (byte(addrs, 2) == nc and ssub(addrs, 3, 2 + nc) == client) then
    local keep, na, p = string.char(nc) .. client, 1, 2
    for _ = 1, byte(addrs, 1) or 0 do
      local n = byte(addrs, p) or 0
      if n == 0 then break end
      local a = ssub(addrs, p + 1, p + n)
      p = p + 1 + n
      if a ~= client and na < MAXADDR and #keep + n + 1 <= ADDRBYTES then keep = keep .. string.char(n) .. a; na = na + 1 end
    end
    addrs = string.char(na) .. keep
  end
  rcall('SET', vkey, pack(FMT, unpack(R, 1, NVAL)) .. addrs, 'PX', ARGV[8])
  return addrs
end

-- A throttle: its key, and the marker the RCPT-time lookup reads with
-- the state (HGETALL): a state made for it expires with the throttle, one
-- that expires sooner lives as long, a durable one stays so. st_ttl is
-- the state's PTTL, read before any write.
local function write_throttle(throttle, st_ttl)
  local left = string.format('%d', throttle.til - now)
  rcall('SET', tkey, string.format('%d %s', throttle.til, name(throttle.l)), 'PX', left)
  rcall('HSET', st, 'vt', left)
  if st_ttl == -2 or (st_ttl >= 0 and st_ttl < throttle.til - now) then rcall('PEXPIRE', st, left) end
end

-- Postfix asking again about a message counted already: the message's id
-- as a number (0: none), and whether the record holds it.
local function seen(id)
  local idn = 0
  if #id == 4 then idn = unpack_('>I4', id) end
  if idn ~= 0 then
    for i = ID0 + 1, ID0 + NIDS do
      if R[i] == idn then return idn, true end
    end
  end
  return idn, false
end

local function count(keys, args)
  if not rcall then bind() end
  st, vkey, tkey, ARGV, x, smp = keys[1], keys[2], keys[3], args, nil, nil
  now = args[1] + 0
  if now == 0 then
    local t = rcall('TIME')
    now = t[1] * 1000 + (t[2] - t[2] % 1000) / 1000
  end
  local want_ver, id, nrcpt, client = args[2], args[3], args[4] + 0, args[5]
  spec = args[6]
  read_record(read_limits())
  local idn, dup = seen(id)
  if dup then return {2, rcall('HEXISTS', st, 'ob')} end
  if want_ver == '-2' then return {5, 0} end
  local hv = rcall('HMGET', st, 'ver', 'aup', 'ob', 'vt')
  local ob = hv[3] and 1 or 0
  if want_ver ~= (hv[1] or '0') then return {4, ob} end
  -- A throttle in force holds back the message, uncounted. (Its marker in
  -- the state, vt, only tells the RCPT-time lookup to look here.)
  -- (The marker vt is written with the throttle, and outlives it.)
  local th = hv[4] and rcall('GET', tkey)
  if th then
    local til, tname = string.match(th, '^(%d+) (.*)$')
    if til and til + 0 > now then return {3, ob, til + 0, tname} end
  end
  if hv[4] then rcall('HDEL', st, 'vt') end -- a throttle that ended
  move_rings(nrcpt)
  local crossings = find_crossings()
  local throttle, suspend
  if crossings then throttle, suspend = pick(crossings, hv[2]) end
  if suspend then x, smp = crossing_read(st), rcall('HGET', st, 'smp') end
  local st_ttl = throttle and rcall('PTTL', st) -- the state's expiry, which a throttle's marker may extend
  -------------------------------------------------------------- writes --
  local addrs = write_record(idn, client)
  if not crossings then return {1, ob} end
  if throttle then write_throttle(throttle, st_ttl) end
  local sid = ''
  if suspend then sid, ob = suspension(suspend, addrs), 1 end
  local out = {1, ob}
  for _, c in ipairs(crossings) do
    local cid = ''
    if c == suspend then cid = sid end
    for _, v in ipairs({c.l - 1, LS[3 * c.l], c.count, c.since, c.til, cid}) do out[#out + 1] = v end
  end
  return out
end

-- FUNCTION, the function's name, is set before this file (script.go).
redis.register_function(FUNCTION, count)
