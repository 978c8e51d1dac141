-- lease_renew.lua: extends the lease KEYS[1] by ARGV[2] ms while ARGV[1]
-- (this holder) holds it. Reply: 1 renewed, 0 held by another or by nobody.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
