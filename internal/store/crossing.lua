-- What an account crossing an AUP rule writes. This file is put before
-- the scripts that find crossings (ingest.lua: the spam count), so that
-- one script call finds and records a crossing atomically. It reads no
-- global when it is loaded, so that it also serves in a function library
-- (whose top level sees none).
--
-- A crossing writes one record: {"crossing":{...}}, the JSON of Go's
-- events.Crossing (its type, time, account, company, status, the
-- suspended services before and after, and the AUP suspension or report
-- with its rule, counts, window and samples). It goes in the state as
-- last_aup, in the outbox, from which the account event is published, and
-- in the history. Go renders the account event, the last AUP suspension
-- and the history line from it (crossing.go), each in one place. aupd 0.2
-- read the same outbox entries, so a 0.2 process running beside this one
-- during a rolling upgrade publishes them right.
-- A suspension also marks the services it suspends (sus:send and
-- sus:webmail_send), which is what every door reads.

-- RFC 3339 in UTC with milliseconds (days from civil, Hinnant), for the
-- services' markers.
local function iso(ms)
  local floor = math.floor
  local s = floor(ms / 1000)
  local days = floor(s / 86400)
  local sod = s - days * 86400
  local z = days + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    floor(sod / 3600), floor(sod % 3600 / 60), sod % 60, ms - s * 1000)
end

local CROSSING_READ = {'ver', 'company', 'status', 'created',
  'sus:send', 'sus:receive', 'sus:imap', 'sus:pop3', 'sus:webmail', 'sus:webmail_send'}
local SERVICES = {'send', 'receive', 'imap', 'pop3', 'webmail', 'webmail_send'}
local SUSPENDS = {send = true, webmail_send = true} -- what an AUP suspension suspends

-- What a crossing reads, before any write: the fields it changes, and
-- that the lists it writes are lists, so that a key of the wrong type
-- fails the account's part before it wrote anything. st is the state
-- HASH; the account's other keys share its name but for the last letter
-- (h history, o outbox).
local function crossing_read(st)
  local kb = string.sub(st, 1, -2)
  for _, key in ipairs({kb .. 'h', kb .. 'o'}) do
    local ty = redis.call('TYPE', key)['ok']
    if ty ~= 'none' and ty ~= 'list' then error({err = 'WRONGTYPE ' .. key .. ' holds a ' .. ty}) end
  end
  return redis.call('HMGET', st, unpack(CROSSING_READ))
end

-- A volume limit's facts (c.volume of crossing_write): limit (its name),
-- kind (messages | recipients), window (ms), messages and recipients
-- within it (-1: not counted), since (ms) and clients (text), as the
-- suspension's volume object.
local function crossing_volume(v)
  local q, f = cjson.encode, string.format
  local parts = {'"limit":' .. q(v.limit), '"kind":' .. q(v.kind), '"window_seconds":' .. f('%d', v.window / 1000)}
  if v.messages >= 0 then parts[#parts + 1] = '"messages":' .. f('%d', v.messages) end
  if v.recipients >= 0 then parts[#parts + 1] = '"recipients":' .. f('%d', v.recipients) end
  local clients = {}
  for i, a in ipairs(v.clients) do clients[i] = q(a) end
  parts[#parts + 1] = '"since":' .. q(iso(v.since))
  parts[#parts + 1] = '"clients":[' .. table.concat(clients, ',') .. ']'
  return ',"volume":{' .. table.concat(parts, ',') .. '}'
end

-- The spam-rate rule's figures in the record, when it crossed.
local function rate_json(r)
  if not r then return '' end
  return ',"rate":{"spam":' .. r.spam .. ',"ham":' .. r.ham .. ',"limit":' .. string.format('%.6g', r.ppm / 1e6) ..
    ',"min_spam":' .. r.min .. '}'
end

-- Record a crossing. x is what crossing_read read; c the crossing's
-- facts: id, action (suspend | report), rule, at and from (ms: the
-- crossing's time and the start of what counted), account, company,
-- threshold, count, capped, counts (outbound, inbound, complaint),
-- samples (stream sequences, as text), for the spam-rate rule rate
-- (spam, ham, ppm: the limit in parts per million, min: the least spam)
-- and, for a volume limit, volume (crossing_volume). The state's fields
-- go into hset after its first nh values, for the caller's one HSET;
-- returns the new nh.
local function crossing_write(st, x, c, hset, nh)
  local kb, q, at = string.sub(st, 1, -2), cjson.encode, iso(c.at)
  local old, new, services = {}, {}, '[]'
  if c.action == 'suspend' then services = '["send","webmail_send"]' end
  for i, s in ipairs(SERVICES) do
    local on = x[4 + i]
    if on then old[#old + 1] = q(s) end
    if c.action == 'suspend' and not on and SUSPENDS[s] then
      hset[nh + 1], hset[nh + 2], nh = 'sus:' .. s,
        '{"id":' .. q(c.id) .. ',"reason":"aup_violation","actor":"aupd","at":' .. q(at) .. '}', nh + 2
      on = true
    end
    if on then new[#new + 1] = q(s) end
  end
  local company = x[2]
  if not company and c.company ~= '' then hset[nh + 1], hset[nh + 2], nh = 'company', c.company, nh + 2 end
  local n = c.counts
  local record = '{"crossing":{"type":' .. q(c.action == 'suspend' and 'suspended' or 'reported') ..
    ',"time":' .. q(at) .. ',"account":' .. q(c.account) .. ',"company":' .. q(company or c.company) ..
    ',"status":' .. q(x[3] or 'active') .. ',"old":[' .. table.concat(old, ',') ..
    '],"new":[' .. table.concat(new, ',') .. '],"suspension":{"id":' .. q(c.id) ..
    ',"action":' .. q(c.action) .. ',"rule":' .. q(c.rule) .. ',"services":' .. services ..
    ',"threshold":' .. c.threshold .. ',"count":' .. c.count .. ',"capped":' .. tostring(c.capped) ..
    ',"counts":{"outbound":' .. n[1] .. ',"inbound":' .. n[2] .. ',"complaint":' .. n[3] ..
    '},"window_start":' .. q(iso(c.from)) .. ',"window_end":' .. q(at) ..
    ',"samples":[' .. table.concat(c.samples, ',') .. ']' .. rate_json(c.rate) ..
      (c.volume and crossing_volume(c.volume) or '') .. '}}}'
  local fields = {c.action == 'suspend' and 'aup' or 'report', c.id, 'last_aup', record,
    'ver', tonumber(x[1] or '0') + 1, 'ob', 1}
  if not x[4] then fields[#fields + 1], fields[#fields + 2] = 'created', c.at end
  for i = 1, #fields do hset[nh + i] = fields[i] end
  redis.call('RPUSH', kb .. 'o', record)
  redis.call('LPUSH', kb .. 'h', record)
  redis.call('LTRIM', kb .. 'h', 0, 999)
  return nh + #fields
end
