-- flow.lua: the guard of SPEC section 1, read on the destination. A
-- fragment: every script that needs a destination flow's state starts with
-- it (composed with concat! in Rust), so the guard is written once.
--
-- flow_state(fk, marker, marker_value): the state of flow key fk, whose
-- sync copies carry field `marker` = `marker_value` (both passed in by Rust,
-- from redmirror_core::rules, never written here). Returns
--   'none'          no key
--   'sync'          a hash carrying the marker: a sync copy
--   'native'        a hash without it: never touched
--   'wrong', type   a key of another type
local function flow_state(fk, marker, marker_value)
  local ty = redis.call('TYPE', fk)['ok']
  if ty == 'none' then return 'none' end
  if ty ~= 'hash' then return 'wrong', ty end
  if redis.call('HGET', fk, marker) == marker_value then return 'sync' end
  return 'native'
end
