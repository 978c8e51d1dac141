-- apply.lua (after flow.lua and order.lua): events in order, each one atomic guarded
-- step. The reply contract is in script.rs. ARGV[3] 'i': the index is
-- KEYS[1] and kept here (standalone); 's': one slot only, KEYS[1] is the
-- slot's watermark hash and the index is the caller's second step.
local marker, marker_value, with_index = ARGV[1], ARGV[2], ARGV[3] == 'i'
local ik, wk, k0
if with_index then ik, wk, k0 = KEYS[1], KEYS[2], 2 else wk, k0 = KEYS[1], 1 end
local function one(fk, id, ts, op, force, first, last)
  local state, ty = flow_state(fk, marker, marker_value)
  if state == 'native' then return 'skipped_native' end
  if state == 'wrong' then return 'wrong_type:' .. ty end
  local wm = redis.call('HGET', wk, id)
  if force ~= '1' and wm and older(ts, wm) then return 'skipped_stale' end
  redis.call('HSET', wk, id, ts)
  if state == 'sync' then redis.call('DEL', fk) end
  if op == 'u' then
    local i = first
    while i <= last do
      local j = i + 999
      if j > last then j = last end
      redis.call('HSET', fk, unpack(ARGV, i, j))
      i = j + 1
    end
    if with_index then redis.call('HSET', ik, id, '1') end
    return 'applied'
  end
  if state == 'sync' or wm then
    if not with_index then return 'deleted_owned' end
    redis.call('HDEL', ik, id)
  end
  return 'deleted'
end
local out = {}
local p = 4
for e = 1, #KEYS - k0 do
  local n = tonumber(ARGV[p + 4])
  out[e] = one(KEYS[e + k0], ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], p + 5, p + 4 + n)
  p = p + 5 + n
end
return out
