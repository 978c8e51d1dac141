-- prune.lua: removes watermarks of absent, unindexed flows whose
-- watermark is unchanged since the scan. Arguments and reply: PRUNE in
-- prune.rs.
local wk, ik, n = KEYS[1], KEYS[2], 0
for i = 3, #KEYS do
  local id, seen = ARGV[2 * i - 5], ARGV[2 * i - 4]
  if redis.call('EXISTS', KEYS[i]) == 0
    and redis.call('HEXISTS', ik, id) == 0
    and redis.call('HGET', wk, id) == seen then
    n = n + redis.call('HDEL', wk, id)
  end
end
return n
