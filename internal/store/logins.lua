-- Record one login of an account, as Dovecot reported it, for the abuse
-- desk: a short list of the account's recent logins, one entry per
-- result, protocol and client address, the most recent first.
--
-- KEYS[1] the account's logins LIST <prefix>:{<account>}:li
-- KEYS[2] its state HASH <prefix>:{<account>}:s (read only)
-- ARGV[1] now in ms
-- ARGV[2] retention in ms: an entry not seen again for this long goes,
--         and the list expires this long after its last write
-- ARGV[3] the most entries kept
-- ARGV[4] "c": the list may be created (a verified login of an account
--         aupd governs); else the login is added only to an account that
--         has a list already or a record in aupd ("created" in its state)
-- ARGV[5] result (o ok, f failed, r refused by the policy), ARGV[6]
--         protocol, ARGV[7] client address ("-" for none)
--
-- An entry is "<last> <first> <count> <result> <protocol> <address>"
-- (times in seconds): a login alike to an entry (same result, protocol
-- and address) replaces it at the head with its count raised.
-- Returns 1 when recorded, 0 when the account has nothing to add to.
local rcall, smatch, sformat, mfloor = redis.call, string.match, string.format, math.floor
local key, st = KEYS[1], KEYS[2]
if ARGV[4] ~= 'c' and rcall('EXISTS', key) == 0 and rcall('HEXISTS', st, 'created') == 0 then
  return 0
end
local now, retention, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sec, lo = mfloor(now / 1000), mfloor((now - retention) / 1000)
local tail = ARGV[5] .. ' ' .. ARGV[6] .. ' ' .. ARGV[7]
local all = rcall('LRANGE', key, 0, -1)
local count, first, last, alike, stale = 0, sec, sec, nil, {}
for _, e in ipairs(all) do
  local l, f, c, rest = smatch(e, '^(%d+) (%d+) (%d+) (.+)$')
  if not l then error('malformed login entry') end
  if l + 0 <= lo then
    stale[#stale + 1] = e
  elseif rest == tail and not alike then
    alike, count, first, last = e, c + 0, math.min(f + 0, sec), math.max(l + 0, sec)
  end
end
if alike then rcall('LREM', key, 1, alike) end
for _, e in ipairs(stale) do rcall('LREM', key, 1, e) end
rcall('LPUSH', key, sformat('%d %d %d %s', last, first, count + 1, tail))
if #all + 1 > keep then rcall('LTRIM', key, 0, keep - 1) end
rcall('PEXPIRE', key, retention)
return 1
