-- Put before the scripts that take the accounts of many slots in one call
-- on a Redis Cluster (stats.lua, senders.lua; ingest.lua tells the same in
-- Go). Such a script is flagged allow-cross-slot-keys (the shebang line
-- script.go puts first).
-- A Cluster node's refusal of a key it does not serve now (store's
-- clusterRefused tells the same errors).
local function refused(msg)
  for _, p in ipairs({'non local key', 'rehashing of the slot', 'slot not served', 'cluster is down'}) do
    if string.find(msg, p, 1, true) then return true end
  end
  return false
end
