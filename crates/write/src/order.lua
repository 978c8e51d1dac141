-- order.lua: comparing two encoded orders ("{time}" with epoch 0, or
-- "{epoch}:{time}", as redmirror_core::Order::encode writes them): a newer
-- epoch wins, and within an epoch the later source time.
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
