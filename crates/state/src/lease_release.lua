-- lease_release.lua: deletes the lease KEYS[1] while ARGV[1] (this holder)
-- holds it. Reply: 1 released, 0 held by another or by nobody.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
