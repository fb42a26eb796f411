-- Count one message an authenticated account sent (Postfix's
-- END-OF-MESSAGE policy request) against its volume limits, and act on a
-- crossing: a throttle, a suspension or a report. One call, atomic: it
-- reads everything first and writes last. A Redis function (FUNCTION
-- LOAD, as ingest.lua): its library is loaded once, so that a call does
-- not define its functions again; crossing.lua is put before it.
--
-- KEYS[1] the account's state HASH <prefix>:{<account>}:s
-- KEYS[2] its volume record <prefix>:{<account>}:v (STRING)
-- and, named from the state's key as they are seldom touched (one
-- Cluster slot): its throttle <prefix>:{<account>}:vt (STRING: "<until
-- ms> <limit name>"), whose marker is the state's field vt; a crossing
-- writes its history and outbox, the state's name ending in h and o
-- ARGV[1] the message, packed big-endian: now in ms I6 (0: read Redis's
--   clock, TIME); the state's version the sender check allowed i8 (-1:
--   none was made: answer "changed" unless the message is a duplicate;
--   -2: only ask whether it is one); its recipients I4; its id B+c0 (4
--   bytes from Postfix's instance and queue id, the same when Postfix
--   asks again about the message; none: 0 bytes); the client B+c0 (its
--   IPv4 address, 4 bytes, or its IPv6 address's /64 prefix, 8 bytes;
--   none: 0 bytes); then, read only on a crossing: id for a suspension or
--   report, company, account, each I2+c0, and the spam count's window I6
--   (ms): its samples within it are the suspension's evidence
-- ARGV[2] the account's limits, packed big-endian:
--   ring sum I2, limit sum B, rings B, limits B, per ring: bucket (ms) I4,
--   kind B (1 messages, 2 recipients); per limit: ring B, max I2, action B
--   (1 throttle, 2 suspend, 3 reported throttle, 4 reported suspension);
--   per limit: name I2+c0. The record expires after the longest window,
--   12 buckets of the widest ring.
-- One packed message rather than an argument a value: Redis makes a
-- string object and a Lua string of every argument, about 1,400
-- instructions each.
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
-- Returns outcome * 2 + ob, an integer, when nothing else is to be said
-- (a table reply costs Redis about 4,800 instructions more): outcome 1
-- counted, 2 duplicate, 4 changed, 5 new (asked only whether it is a
-- duplicate); ob 1 when the account's outbox holds entries to publish.
-- Else a table: {3, ob, until, limit name} when a throttle holds the
-- message back; {1, ob, crossings...} when the message crossed limits, 6
-- values a crossing: limit index (0-based), action code, count, since
-- (ms), until (ms, a throttle's end; 0), the suspension's or report's id
-- ("").
-- Lua costs more than Redis commands here. Under callgrind (Redis 7.0):
-- a redis.call costs 5,000-11,000 instructions, a struct.unpack or pack
-- about 240 a value and a table about 100 an element, while string.byte
-- costs about 30 a value and an arithmetic operation on locals a few
-- dozen. So the hot path makes four redis.calls (TIME, GET, HMGET, SET),
-- reads the record with string.byte into locals, finds a recent id with
-- one plain string.find, and writes the record as the old one's pieces
-- with the changed bytes between them; it makes no table. Floors are
-- arithmetic (x - x % g).
local NSLOT, MAXC, NIDS, MAXADDR, ADDRBYTES = 12, 65535, 6, 3, 27
local HEAD = 8 + 4 * NIDS -- the record's bytes before the rings
local RING = 2 * NSLOT -- a ring's bytes
local NOID = '\0\0\0\0' -- an empty id
local BIT = {1, 2, 4, 8, 16, 32, 64, 128} -- limit l's bit in above
-- Formats by count: constants, not tables a call would make.
local RFMT = {'>I4B', '>I4BI4B', '>I4BI4BI4B', '>I4BI4BI4BI4B'}
local LFMT = {'>BI2B', '>BI2BBI2B', '>BI2BBI2BBI2B', '>BI2BBI2BBI2BBI2B', '>BI2BBI2BBI2BBI2BBI2B',
  '>BI2BBI2BBI2BBI2BBI2BBI2B', '>BI2BBI2BBI2BBI2BBI2BBI2BBI2B', '>BI2BBI2BBI2BBI2BBI2BBI2BBI2BBI2B'}
local SLOTS = '>I2I2I2I2I2I2I2I2I2I2I2I2' -- a ring's buckets

-- A library's top level sees no globals: bind() binds those the functions
-- use, on the first call.
local rcall, unpack_, pack, byte, ssub, char, find, srep, sformat, ZERO
local function bind()
  rcall, unpack_, pack, byte, ssub = redis.call, struct.unpack, struct.pack, string.byte, string.sub
  char, find, srep, sformat = string.char, string.find, string.rep, string.format
  ZERO = srep('\0', RING)
end

-- The call's: its keys, message (and where its crossing part starts) and
-- clock; the account's limits (spec; per ring RS: bucket width (ms),
-- kind; per limit LS: ring (0-based), max, action; the record's expiry;
-- per ring LEAST: the least max of its limits);
-- the record as it is (rec, valid for the limits), its last count's time
-- (ms) and its above byte; and what a suspension read (x, smp).
local st, vkey, msg, xpos, now
local spec, nrings, nlimits, RS, LS, EXPIRY, LEAST
local rec, last, above, x, smp
-- W[r]: ring r's bucket now; W[4 + r] and W[8 + r]: its count without and
-- with the message; Q[r]: where in rec its current bucket's two bytes are,
-- and Q[4 + r] their new count. Tables for the library's life, of a fixed
-- size, rewritten by each call.
local W = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
local Q = {0, 0, 0, 0, 0, 0, 0, 0}

-- The limits, unpacked once per spec: a provider has few (its own and
-- its companies' overrides), and SPECS keeps at most 64, starting afresh
-- past that. Names come last: only a crossing reads them.
local SPECS, NSPECS = {}, 0
local function read_limits()
  local c = SPECS[spec]
  if not c then
    local ringsum, limitsum, nr, nl, pos = unpack_('>I2BBB', spec)
    local rs = {unpack_(RFMT[nr], spec, pos)}
    local widest = 0
    for r = 1, nr do
      if rs[2 * r - 1] > widest then widest = rs[2 * r - 1] end
    end
    local ls = {unpack_(LFMT[nl], spec, rs[2 * nr + 1])}
    local least = {}
    for r = 1, nr do least[r] = MAXC end
    for l = 1, nl do
      local r = ls[3 * l - 2] + 1
      if ls[3 * l - 1] < least[r] then least[r] = ls[3 * l - 1] end
    end
    c = {ringsum, limitsum, nr, nl, rs, ls, sformat('%d', widest * NSLOT), least}
    if NSPECS >= 64 then SPECS, NSPECS = {}, 0 end
    SPECS[spec], NSPECS = c, NSPECS + 1
  end
  nrings, nlimits, RS, LS, EXPIRY, LEAST = c[3], c[4], c[5], c[6], c[7], c[8]
  return c[1], c[2]
end

-- The record as it is, made whole for these limits: a record of other
-- rings keeps its ids and last count's time and starts its counts and
-- addresses afresh; no record starts empty. Limits of other maxima or
-- actions start above afresh.
local function read_record(ringsum, limitsum)
  rec = rcall('GET', vkey)
  local b1, b2, b3, b4, b5, b6, b7, b8 = 0, 0, 0, 0, 0, 0, 0, 0
  if rec then b1, b2, b3, b4, b5, b6, b7, b8 = byte(rec, 1, 8) end
  if not (rec and b1 * 256 + b2 == ringsum and #rec > HEAD + RING * nrings) then
    local ids = ssub(ZERO, 1, 4 * NIDS)
    if rec and #rec >= HEAD then ids = ssub(rec, 9, HEAD) else b4, b5, b6, b7 = 0, 0, 0, 0 end
    b8 = 0
    rec = pack('>I2BBBBBB', ringsum, b3, b4, b5, b6, b7, b8) .. ids .. srep(ZERO, nrings) .. '\0'
  end
  -- in ms; stored in seconds, which bucket boundaries (whole seconds) allow
  last, above = (((b4 * 256 + b5) * 256 + b6) * 256 + b7) * 1000, b8
  if b3 ~= limitsum then above = 0 end
end

-- Postfix asking again about a message counted already: whether the
-- record's recent ids hold the message's (4 bytes; none: "").
local function seen(id)
  if #id ~= 4 or id == NOID then return false end
  local p = 9
  while true do
    local f = find(rec, id, p, true)
    if not f or f > HEAD - 3 then return false end
    if (f - 9) % 4 == 0 then return true end
    p = f + 1
  end
end

-- The record with ring r's buckets l+1 .. n empty (n > l); the ring's
-- bytes are those from p.
local function empty(p, l, n)
  local z
  if n - l >= NSLOT then
    z = ZERO
  else
    local ring = ssub(rec, p, p + RING - 1)
    local s, e = (l + 1) % NSLOT, n % NSLOT
    if s <= e then
      z = ssub(ring, 1, 2 * s) .. ssub(ZERO, 1, 2 * (e - s + 1)) .. ssub(ring, 2 * e + 3)
    else
      z = ssub(ZERO, 1, 2 * (e + 1)) .. ssub(ring, 2 * e + 3, 2 * s) .. ssub(ZERO, 1, 2 * (NSLOT - s))
    end
  end
  rec = ssub(rec, 1, p - 1) .. z .. ssub(rec, p + RING)
end

-- Move ring r (its bytes from p in rec) to now, and add the message to
-- its current bucket: the buckets between the last count and now are
-- empty (a clock that went back counts into the newest bucket). Its
-- count is the sum of its 12 big-endian buckets: 256 times their high
-- bytes' sum plus their low bytes'. Returns where in rec the bucket's two
-- bytes are, and its new count.
local function move_ring(r, p, add)
  local g = RS[2 * r - 1]
  local n, l = (now - now % g) / g, (last - last % g) / g
  if n < l then n = l end
  if n > l then empty(p, l, n) end
  local h1, l1, h2, l2, h3, l3, h4, l4, h5, l5, h6, l6, h7, l7, h8, l8, h9, l9, h10, l10, h11, l11, h12, l12 = byte(rec, p, p + RING - 1)
  local t = (h1 + h2 + h3 + h4 + h5 + h6 + h7 + h8 + h9 + h10 + h11 + h12) * 256
    + l1 + l2 + l3 + l4 + l5 + l6 + l7 + l8 + l9 + l10 + l11 + l12
  local q = p + n % NSLOT * 2
  local hi, lo = byte(rec, q, q + 1)
  local old = hi * 256 + lo
  local new = old + add
  if new > MAXC then new = MAXC end
  W[r], W[4 + r], W[8 + r] = n, t, t - old + new
  return q, new
end

-- The crossings: limits above their max that were not. A limit back
-- within its max before this message is no longer above it.
local function find_crossings()
  if above == 0 then -- nothing above: a crossing needs a ring past its least max
    local past = false
    for r = 1, nrings do
      if W[8 + r] > LEAST[r] then past = true end
    end
    if not past then return nil end
  end
  local crossings = nil
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
  return crossings
end

-- A crossing's window (the start of its oldest bucket), its start (the
-- oldest bucket that counts) and, for a throttle, its end: when enough
-- of the oldest buckets have left the window for the count to be within
-- the max again.
local function span(c, max)
  local g, n = RS[2 * c.r - 1], W[c.r]
  local v = {unpack_(SLOTS, rec, HEAD + 1 + (c.r - 1) * RING)} -- without the message
  v[n % NSLOT + 1] = Q[4 + c.r]
  local since, til, left = 0, 0, c.count
  for k = n - NSLOT + 1, n do -- oldest first
    local b = v[k % NSLOT + 1]
    if since == 0 and b > 0 then since = k * g end
    left = left - b
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
      out[i] = sformat('%d.%d.%d.%d', byte(a, 1, 4))
    else
      out[i] = sformat('%x:%x:%x:%x::/64', unpack_('>I2I2I2I2', a))
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
    if t * 1000 > now - window then out[#out + 1] = sformat('%.0f', seq) end
  end
  return out
end

-- Record the suspension (or its report) of crossing c with crossing.lua;
-- returns its id.
local function suspension(c, addrs)
  local id, company, account, window = unpack_('>I2c0I2c0I2c0I6', msg, xpos)
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

-- The record's client addresses (from ap in rec) with this client first,
-- then the others, as long as they fit; nil in the usual case, the same
-- client again (or none), which keeps them as they are.
local function addresses(client, ap)
  local nc = #client
  if not (nc == 4 or nc == 8) or (byte(rec, ap + 1) == nc and ssub(rec, ap + 2, ap + 1 + nc) == client) then return nil end
  local addrs = ssub(rec, ap)
  local keep, na, p = char(nc) .. client, 1, 2
  for _ = 1, byte(addrs, 1) or 0 do
    local n = byte(addrs, p) or 0
    if n == 0 then break end
    local a = ssub(addrs, p + 1, p + n)
    p = p + 1 + n
    if a ~= client and na < MAXADDR and #keep + n + 1 <= ADDRBYTES then keep = keep .. char(n) .. a; na = na + 1 end
  end
  return char(na) .. keep
end

-- Write the record: its header (the last count's time, in s, moves only
-- forward), its ids with this message's first, then rec's rings with each
-- ring's current bucket's new count between their pieces, then the
-- addresses (addrs, new ones; nil: rec's). Two rings, the usual limits
-- (an hour's and a day's), make one concatenation.
local function write_record(id, ringsum, limitsum, addrs)
  if now > last then last = now end
  local head = pack('>I2BI4B', ringsum, limitsum, (last - last % 1000) / 1000, above)
  local kept = HEAD -- the old ids kept: from byte 9 to kept
  if #id == 4 and id ~= NOID then kept = HEAD - 4 else id = '' end
  local q, new = Q[1], Q[5]
  local lo = new % 256
  local v
  if nrings == 2 then
    local q2, new2 = Q[2], Q[6]
    local lo2 = new2 % 256
    v = head .. id .. ssub(rec, 9, kept) .. ssub(rec, HEAD + 1, q - 1) .. char((new - lo) / 256, lo) ..
      ssub(rec, q + 2, q2 - 1) .. char((new2 - lo2) / 256, lo2)
    q = q2
  else
    v = head .. id .. ssub(rec, 9, kept) .. ssub(rec, HEAD + 1, q - 1) .. char((new - lo) / 256, lo)
    for r = 2, nrings do
      local p = q + 2
      q, new = Q[r], Q[4 + r]
      lo = new % 256
      v = v .. ssub(rec, p, q - 1) .. char((new - lo) / 256, lo)
    end
  end
  if addrs then
    v = v .. ssub(rec, q + 2, HEAD + RING * nrings) .. addrs
  else
    v = v .. ssub(rec, q + 2)
  end
  rcall('SET', vkey, v, 'PX', EXPIRY)
end

-- The throttle's key: the state's but for its last letter, so in its slot
-- (a key a call seldom touches, named here rather than passed: an
-- argument costs every call about 1,400 instructions).
local function tkey() return ssub(st, 1, -2) .. 'vt' end

-- A throttle: its key, and the marker the RCPT-time lookup reads with
-- the state (HGETALL): a state made for it expires with the throttle, one
-- that expires sooner lives as long, a durable one stays so. st_ttl is
-- the state's PTTL, read before any write.
local function write_throttle(throttle, st_ttl)
  local left = sformat('%d', throttle.til - now)
  rcall('SET', tkey(), sformat('%d %s', throttle.til, name(throttle.l)), 'PX', left)
  rcall('HSET', st, 'vt', left)
  if st_ttl == -2 or (st_ttl >= 0 and st_ttl < throttle.til - now) then rcall('PEXPIRE', st, left) end
end

local function count(keys, args)
  if not rcall then bind() end
  st, vkey, msg, spec, x, smp = keys[1], keys[2], args[1], args[2], nil, nil
  local want_ver, nrcpt, id, client
  now, want_ver, nrcpt, id, client, xpos = unpack_('>I6i8I4Bc0Bc0', msg)
  if now == 0 then
    local t = rcall('TIME')
    now = t[1] * 1000 + (t[2] - t[2] % 1000) / 1000
  end
  local ringsum, limitsum = read_limits()
  read_record(ringsum, limitsum)
  if seen(id) then return 4 + rcall('HEXISTS', st, 'ob') end
  if want_ver == -2 then return 10 end
  local hv = rcall('HMGET', st, 'ver', 'aup', 'ob', 'vt')
  local ob = hv[3] and 1 or 0
  if want_ver ~= (hv[1] or 0) + 0 then return 8 + ob end
  -- A throttle in force holds back the message, uncounted. (Its marker in
  -- the state, vt, only tells the RCPT-time lookup to look here; it is
  -- written with the throttle, and outlives it.)
  local th = hv[4] and rcall('GET', tkey())
  if th then
    local til, tname = string.match(th, '^(%d+) (.*)$')
    if til and til + 0 > now then return {3, ob, til + 0, tname} end
  end
  if hv[4] then rcall('HDEL', st, 'vt') end -- a throttle that ended
  local p = HEAD + 1
  for r = 1, nrings do
    Q[r], Q[4 + r] = move_ring(r, p, RS[2 * r] == 1 and 1 or nrcpt)
    p = p + RING
  end
  local crossings = find_crossings()
  local throttle, suspend
  if crossings then throttle, suspend = pick(crossings, hv[2]) end
  if suspend then x, smp = crossing_read(st), rcall('HGET', st, 'smp') end
  local st_ttl = throttle and rcall('PTTL', st) -- the state's expiry, which a throttle's marker may extend
  -------------------------------------------------------------- writes --
  local addrs = addresses(client, p)
  write_record(id, ringsum, limitsum, addrs)
  if not crossings then return 2 + ob end
  if throttle then write_throttle(throttle, st_ttl) end
  local sid = ''
  if suspend then sid, ob = suspension(suspend, addrs or ssub(rec, p)), 1 end
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
