-- Remove published entries from one account's outbox.
-- KEYS[1] state HASH  KEYS[2] outbox LIST  ARGV the entries, as read
-- Clears the state's "ob" flag (entries pending) once the outbox is empty.
-- Returns the number of entries left.
local st, outbox = KEYS[1], KEYS[2]
for i = 1, #ARGV do redis.call('LREM', outbox, 1, ARGV[i]) end
local left = redis.call('LLEN', outbox)
if left == 0 and redis.call('HEXISTS', st, 'ob') == 1 then redis.call('HDEL', st, 'ob') end
return left
