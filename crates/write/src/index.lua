-- index.lua (after order.lua): a cluster destination's index step, one
-- call on the index key's slot. KEYS[1] the index, KEYS[2] the hash of
-- the order of the event behind each flow's last index change (in the
-- index's slot). ARGV[1] '1' ignores those orders (a rewind), then per
-- flow: id, order, action ('s' sets the field to '1', 'r' removes it).
-- A flow's field changes only for an order no older than the last one
-- that changed it: when two batches' steps land out of order, the newer
-- event's word stands. The reply: one 'done' or 'stale' per flow.
local ik, ok = KEYS[1], KEYS[2]
local force = ARGV[1] == '1'
local out = {}
for i = 2, #ARGV, 3 do
  local id, ts, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local last = redis.call('HGET', ok, id)
  if not force and last and older(ts, last) then
    out[#out + 1] = 'stale'
  else
    redis.call('HSET', ok, id, ts)
    if action == 's' then redis.call('HSET', ik, id, '1') else redis.call('HDEL', ik, id) end
    out[#out + 1] = 'done'
  end
end
return out
