-- epoch_sync.lua: merges a process's source epoch into the shared one.
-- Its arguments and reply are documented on SYNC in epoch.rs (redmirror-state).
local k = KEYS[1]
local e, rid, t = ARGV[1], ARGV[2], ARGV[3]
local se = redis.call('HGET', k, 'epoch')
if se and tonumber(se) > tonumber(e) then
  return {se, redis.call('HGET', k, 'run_id') or '', redis.call('HGET', k, 'time_us') or '0'}
end
if se and tonumber(se) == tonumber(e) then
  local st = redis.call('HGET', k, 'time_us')
  if st and tonumber(st) > tonumber(t) then t = st end
  if rid == '' then rid = redis.call('HGET', k, 'run_id') or '' end
end
redis.call('HSET', k, 'epoch', e, 'time_us', t, 'run_id', rid)
return {e, rid, t}
