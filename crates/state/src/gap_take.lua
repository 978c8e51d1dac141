-- gap_take.lua: takes (reads and clears) the slots the capture gaps since
-- the last take cover. Arguments and reply: TAKE in signal.rs.
local v = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return v
