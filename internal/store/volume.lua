-- Count one message an authenticated account sent (Postfix's
-- END-OF-MESSAGE policy request) against its volume limits, and act on a
-- crossing: a throttle, a suspension or a report. One call, atomic: it
-- reads everything first and writes last.
--
-- KEYS[1] the account's state HASH <prefix>:{<account>}:s; its volume
--         record is the same name ending in v (STRING), its throttle in vt
--         (STRING: "<until ms> <limit name>"), its history and outbox in h
--         and o (one Cluster slot)
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME)
-- ARGV[2] the state's version the sender check allowed; -1: none was
--         made (answer "changed" unless the message is a duplicate)
-- ARGV[3] the message's id: 4 bytes, from Postfix's instance and queue
--         id, the same when Postfix asks again about the message; "": none
-- ARGV[4] its recipients   ARGV[5] the client's address, 4 or 16 bytes; ""
-- ARGV[6] the account's limits, packed big-endian:
--   ring sum I2, limit sum B, rings B, per ring: bucket (ms) I4, kind B
--   (1 messages, 2 recipients); limits B, per limit: ring B, max I2,
--   action B (1 throttle, 2 suspend, 3 reported throttle, 4 reported
--   suspension), name I2+c0
-- ARGV[7] read only on a crossing: id for a suspension or report,
--   company, account, each I2+c0
--
-- The record (docs/redis.md, "Volume"): ring sum I2, limit sum B, time of
-- the last count I6 (ms), above B (bit i: limit i is above its max and
-- its crossing was handled), 6 recent message ids I4 (newest first, 0
-- empty), then per ring 12 buckets I2 (bucket n of width g counts the
-- messages or recipients sent in [n*g, (n+1)*g), in slot n % 12; counts
-- stop at 65535), then the client addresses: count B, per address its
-- length B and bytes, newest first, up to 3 and 40 bytes.
--
-- Returns {outcome, ob, crossings...}: outcome 1 counted, 2 duplicate, 3
-- throttled (then the throttle's until and limit name follow), 4 changed,
-- 5 new (ARGV[2] -2: only asked whether it is a duplicate); ob 1 when the
-- account's outbox holds entries to publish; per crossing 6 values: limit
-- index (0-based), action code, count, since (ms), until (ms, a throttle's
-- end; 0), the suspension's or report's id ("").
local rcall, mfloor, mmin = redis.call, math.floor, math.min
local unpack_, pack = struct.unpack, struct.pack
local st = KEYS[1]
local kb = string.sub(st, 1, -2)
local vkey, tkey = kb .. 'v', kb .. 'vt'
local now = tonumber(ARGV[1])
if now == 0 then
  local t = rcall('TIME')
  now = tonumber(t[1]) * 1000 + mfloor(tonumber(t[2]) / 1000)
end
local want_ver, id, nrcpt, client, spec = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local NSLOT, MAXC, NIDS, MAXADDR, ADDRBYTES = 12, 65535, 6, 3, 40
local HEAD = 10 + 4 * NIDS -- bytes before the rings

-- The limits.
local ringsum, limitsum, nrings, pos = unpack_('>I2BB', spec)
local RG, RK = {}, {} -- per ring: bucket width (ms), kind
for r = 1, nrings do RG[r], RK[r], pos = unpack_('>I4B', spec, pos) end
local nlimits
nlimits, pos = unpack_('>B', spec, pos)
local LR, LM, LA, LN = {}, {}, {}, {} -- per limit: ring, max, action, name
for l = 1, nlimits do LR[l], LM[l], LA[l], LN[l], pos = unpack_('>BI2BI2c0', spec, pos) end

-- The record as it is; a record of other rings starts its counts afresh.
local rec = rcall('GET', vkey)
local last, above, IDS, RING, ADDR = 0, 0, {}, {}, {}
for i = 1, NIDS do IDS[i] = 0 end
local same = false
if rec and #rec >= HEAD then
  local rs, ls
  rs, ls, last, above = unpack_('>I2BI6B', rec)
  for i = 1, NIDS do IDS[i] = unpack_('>I4', rec, 11 + 4 * (i - 1)) end
  same = rs == ringsum and #rec >= HEAD + 2 * NSLOT * nrings + 1
  if ls ~= limitsum then above = 0 end
  local ap = HEAD + 1
  if same then ap = HEAD + 2 * NSLOT * nrings + 1 end
  if #rec >= ap then
    local na = string.byte(rec, ap); ap = ap + 1
    for _ = 1, na do
      local n = string.byte(rec, ap) or 0
      if n == 0 then break end
      ADDR[#ADDR + 1] = string.sub(rec, ap + 1, ap + n); ap = ap + 1 + n
    end
  end
end
for r = 1, nrings do
  local b = {}
  for s = 1, NSLOT do b[s] = same and unpack_('>I2', rec, HEAD + 1 + 2 * (NSLOT * (r - 1) + s - 1)) or 0 end
  RING[r] = b
end
if not same then above = 0 end

-- Postfix asking again about a message counted already.
local idn = 0
if #id == 4 then idn = unpack_('>I4', id) end
if idn ~= 0 then
  for i = 1, NIDS do
    if IDS[i] == idn then return {2, rcall('HEXISTS', st, 'ob')} end
  end
end
if want_ver == -2 then return {5, 0} end

local hv = rcall('HMGET', st, 'ver', 'aup', 'ob')
if want_ver < 0 or tonumber(hv[1] or '0') ~= want_ver then return {4, hv[3] and 1 or 0} end
local aup = hv[2]

-- A throttle in force holds back the message, uncounted.
local th = rcall('GET', tkey)
if th then
  local til, name = string.match(th, '^(%d+) (.*)$')
  if til and tonumber(til) > now then return {3, hv[3] and 1 or 0, tonumber(til), name} end
end

-- Move every ring to now: the buckets between the last count and now are
-- empty. A clock that went back counts into the newest bucket.
local CUR = {} -- per ring: the current bucket number
for r = 1, nrings do
  local g = RG[r]
  local n, l = mfloor(now / g), mfloor(last / g)
  if n < l then n = l end
  for k = l + 1, mmin(n, l + NSLOT) do RING[r][k % NSLOT + 1] = 0 end
  CUR[r] = n
end
local function sum(r)
  local t = 0
  for s = 1, NSLOT do t = t + RING[r][s] end
  return t
end

-- Limits back within their max are no longer above it.
for l = 1, nlimits do
  if sum(LR[l] + 1) <= LM[l] then above = above - (mfloor(above / 2 ^ (l - 1)) % 2) * 2 ^ (l - 1) end
end
for r = 1, nrings do
  local s = CUR[r] % NSLOT + 1
  local add = RK[r] == 1 and 1 or nrcpt
  RING[r][s] = mmin(RING[r][s] + add, MAXC)
end

-- The crossings: limits above their max that were not.
local out = {1, 0}
local crossings = {}
for l = 1, nlimits do
  local r = LR[l] + 1
  local total = sum(r)
  local bit = 2 ^ (l - 1)
  if total > LM[l] and mfloor(above / bit) % 2 == 0 then
    above = above + bit
    local g, n = RG[r], CUR[r]
    local since, til, left = 0, 0, total
    for k = n - NSLOT + 1, n do -- oldest first
      local c = RING[r][k % NSLOT + 1]
      if since == 0 and c > 0 then since = k * g end
      left = left - c
      if til == 0 and left <= LM[l] then til = (k + NSLOT) * g end
    end
    crossings[#crossings + 1] = {l = l, r = r, count = total, since = since, til = til}
  end
end

-- What the crossings do: one suspension (or report of one) at most, the
-- first suspend limit crossed; a throttle, the longest.
local throttle, suspend
for _, c in ipairs(crossings) do
  local a = LA[c.l]
  if a == 1 and (not throttle or c.til > throttle.til) then throttle = c end
  if (a == 2 or a == 4) and not suspend and not aup then suspend = c end
end
local x
if suspend then x = volume_crossing_read(st, kb) end

-------------------------------------------------------------- writes --
if idn ~= 0 then
  for i = NIDS, 2, -1 do IDS[i] = IDS[i - 1] end
  IDS[1] = idn
end
if #client == 4 or #client == 16 then
  local keep, bytes = {client}, #client + 1
  for _, a in ipairs(ADDR) do
    if a ~= client and #keep < MAXADDR and bytes + #a + 1 <= ADDRBYTES then keep[#keep + 1] = a; bytes = bytes + #a + 1 end
  end
  ADDR = keep
end
local parts = {pack('>I2BI6B', ringsum, limitsum, now > last and now or last, above)}
for i = 1, NIDS do parts[#parts + 1] = pack('>I4', IDS[i]) end
local maxw = 0
for r = 1, nrings do
  for s = 1, NSLOT do parts[#parts + 1] = pack('>I2', RING[r][s]) end
  if RG[r] * NSLOT > maxw then maxw = RG[r] * NSLOT end
end
parts[#parts + 1] = string.char(#ADDR)
for _, a in ipairs(ADDR) do parts[#parts + 1] = string.char(#a) .. a end
rcall('SET', vkey, table.concat(parts), 'PX', maxw)

if throttle then
  rcall('SET', tkey, string.format('%d %s', throttle.til, LN[throttle.l]), 'PX', throttle.til - now)
end
local sid = ''
if suspend then
  local company, account
  sid, company, account = unpack_('>I2c0I2c0I2c0', ARGV[7])
  -- the same window's other count, when a ring of the other kind has it
  local msgs, rcpts = -1, -1
  for r = 1, nrings do
    if RG[r] == RG[suspend.r] then
      if RK[r] == 1 then msgs = sum(r) else rcpts = sum(r) end
    end
  end
  local hexes = {}
  for i, a in ipairs(ADDR) do hexes[i] = (string.gsub(a, '.', function(c) return string.format('%02x', string.byte(c)) end)) end
  volume_crossing_write(st, kb, x, {
    id = sid, action = LA[suspend.l] == 2 and 'suspend' or 'report', rule = 'volume:' .. LN[suspend.l],
    at = now, from = suspend.since, account = account, company = company,
    threshold = LM[suspend.l], count = suspend.count,
    volume = {kind = RK[suspend.r] == 1 and 'messages' or 'recipients', window = RG[suspend.r] * NSLOT,
      messages = msgs, recipients = rcpts, clients = table.concat(hexes, ',')},
  })
  out[2] = 1
else
  out[2] = hv[3] and 1 or 0
end
for _, c in ipairs(crossings) do
  local cid = ''
  if c == suspend then cid = sid end
  for _, v in ipairs({c.l - 1, LA[c.l], c.count, c.since, c.til, cid}) do out[#out + 1] = v end
end
return out
