-- apply.lua (after flow.lua): events in order, each one atomic guarded
-- step. The reply contract is in script.rs. ARGV[3] 'i': the index is
-- KEYS[1] and kept here (standalone); 's': one slot only, KEYS[1] is the
-- slot's watermark hash and the index is the caller's second step.
local marker, marker_value, with_index = ARGV[1], ARGV[2], ARGV[3] == 'i'
local ik, wk, k0
if with_index then ik, wk, k0 = KEYS[1], KEYS[2], 2 else wk, k0 = KEYS[1], 1 end
local function split(o)
  local c = o:find(':', 1, true)
  if c then return tonumber(o:sub(1, c - 1)), o:sub(c + 1) end
  return 0, o
end
-- Exact comparison of decimal microsecond times (tonumber loses precision past 2^53).
local function earlier(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na or nb then return tonumber(a) < tonumber(b) end
  if #a ~= #b then return #a < #b end
  return a < b
end
local function older(a, b)
  local ea, ta = split(a)
  local eb, tb = split(b)
  if ea ~= eb then return ea < eb end
  return earlier(ta, tb)
end
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
