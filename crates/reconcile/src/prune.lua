-- prune.lua: removes watermarks of absent, unindexed flows whose
-- watermark is unchanged since the scan. Arguments and reply: PRUNE in
-- prune.rs. ARGV[1] 'i': KEYS[2] is the index, checked here; 's': one
-- cluster slot, the caller passed only unindexed flows; 'o': KEYS[1] is a
-- cluster's index-order hash and KEYS[2] the index (one slot, no flow
-- keys): an entry goes while the index has no field for its flow.
if ARGV[1] == 'o' then
  local ok, ik, n = KEYS[1], KEYS[2], 0
  for a = 2, #ARGV, 2 do
    local id, seen = ARGV[a], ARGV[a + 1]
    if redis.call('HEXISTS', ik, id) == 0 and redis.call('HGET', ok, id) == seen then
      n = n + redis.call('HDEL', ok, id)
    end
  end
  return n
end
local with_index = ARGV[1] == 'i'
local wk, ik, k0, n = KEYS[1], KEYS[2], 2, 0
if with_index then k0 = 3 end
for i = k0, #KEYS do
  local a = 2 * (i - k0) + 2
  local id, seen = ARGV[a], ARGV[a + 1]
  if redis.call('EXISTS', KEYS[i]) == 0
    and (not with_index or redis.call('HEXISTS', ik, id) == 0)
    and redis.call('HGET', wk, id) == seen then
    n = n + redis.call('HDEL', wk, id)
  end
end
return n
