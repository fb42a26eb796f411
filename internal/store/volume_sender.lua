-- Read an authenticated sender's state and whether a volume throttle
-- holds it back: the RCPT-time lookup of an account with throttle limits,
-- one command, as the state's HGETALL is for any other.
--
-- KEYS[1] the account's state HASH  KEYS[2] its throttle (STRING, the
--         same name ending in vt): "<until ms> <limit name>"
-- ARGV[1] now in ms, or 0 to read Redis's clock (TIME), which is read only
--         when a throttle exists
-- Returns {state as HGETALL} or, while a throttle holds,
-- {state, until (ms), limit name}.
local h = redis.call('HGETALL', KEYS[1])
local th = redis.call('GET', KEYS[2])
if not th then return {h} end
local til, name = string.match(th, '^(%d+) (.*)$')
if not til then return {h} end
local now = ARGV[1] + 0
if now == 0 then
  local t = redis.call('TIME')
  now = t[1] * 1000 + (t[2] - t[2] % 1000) / 1000
end
if til + 0 <= now then return {h} end
return {h, til + 0, name}
