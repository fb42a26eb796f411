-- Whether a volume throttle holds an authenticated sender back. The
-- RCPT-time lookup reads the sender's state as for any account (HGETALL);
-- only when the state has the throttle's marker (vt) does it ask this,
-- which decides by Redis's clock, and removes the marker of a throttle
-- that ended.
--
-- KEYS[1] the account's state HASH  KEYS[2] its throttle (STRING, the
--         same name ending in vt): "<until ms> <limit name>"
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME)
-- Returns {} when no throttle holds, else {until (ms), limit name}.
local now = ARGV[1] + 0
if now == 0 then
  local t = redis.call('TIME')
  now = t[1] * 1000 + (t[2] - t[2] % 1000) / 1000
end
local th = redis.call('GET', KEYS[2])
if th then
  local til, name = string.match(th, '^(%d+) (.*)$')
  if til and til + 0 > now then return {til + 0, name} end
end
redis.call('HDEL', KEYS[1], 'vt')
return {}
