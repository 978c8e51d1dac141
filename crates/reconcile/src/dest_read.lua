-- dest_read.lua (after "#!lua flags=no-writes" and flow.lua): destination
-- flows as the guard sees them. KEYS: index (mode 'i' only), watermarks,
-- flow keys...; ARGV: marker field, marker value, with_fields ('1' or
-- '0'), mode ('i': the index is KEYS[1]; 's': one cluster slot, no index,
-- its entry reported 0 and read by the caller), flow ids...
-- Reply per flow, four items: state ('n' absent, 'x' not a hash, 'v'
-- native, 's' sync copy), the copy's fields (HGETALL, for 's' when
-- with_fields is '1'; else 0), index entry present (0/1), watermark
-- present (0/1).
local marker, marker_value, with_fields = ARGV[1], ARGV[2], ARGV[3] == '1'
local with_index = ARGV[4] == 'i'
local wk, k0 = KEYS[1], 2
if with_index then wk, k0 = KEYS[2], 3 end
local tags = {none = 'n', wrong = 'x', native = 'v', sync = 's'}
local out = {}
for i = k0, #KEYS do
  local id = ARGV[i - k0 + 5]
  local state = flow_state(KEYS[i], marker, marker_value)
  out[#out + 1] = tags[state]
  if state == 'sync' and with_fields then
    out[#out + 1] = redis.call('HGETALL', KEYS[i])
  else
    out[#out + 1] = 0
  end
  if with_index then
    out[#out + 1] = redis.call('HEXISTS', KEYS[1], id)
  else
    out[#out + 1] = 0
  end
  out[#out + 1] = redis.call('HEXISTS', wk, id)
end
return out
