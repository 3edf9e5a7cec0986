"""The Lua scripts KpiStore runs in Redis: each makes many keys' worth of work one round trip."""

STORES = """
local labels = {}
for i, store in ipairs(ARGV) do
  if i > 1 then
    if redis.call('SISMEMBER', KEYS[1], store) == 1 then
      labels[i - 1] = store
    elseif redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) then
      redis.call('SADD', KEYS[1], store)
      labels[i - 1] = store
    else
      labels[i - 1] = 'other'
    end
  end
end
return labels
"""


# A publish's visitors, in one call: each sketch's HyperLogLog (PFADD), then its exact set when
# those are kept. Exact sets: members are signed 64-bit hashes in decimal (Redis keeps small
# integer sets as a compact intset, 8 bytes per member); 0 is never a hash, it marks a set that
# outgrew its cap. KEYS: each sketch's HyperLogLog, then its exact set when ARGV[3] is 1. ARGV:
# cap, ttl, exact, then one MessagePack array: per sketch n, expire (1 or 0), its n visitors,
# and their n hashes when exact. A sketch's keys get their retention (EXPIRE) when asked, as every
# key at most once an hour (publish.py), and a set made anew as outgrown gets it then. (As
# separate commands, the replies alone took the worker ~1.7 µs of CPU per event to read; as
# separate arguments, packing them took most of a publish of many sketches.)
VISITORS_ADD = """
local cap, ttl, exact = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local values = cmsgpack.unpack(ARGV[4])
local pos, k = 1, 1
while k <= #KEYS do
  local n, first, expire = values[pos], pos + 2, values[pos + 1] == 1
  local last = first + n - 1
  for j = first, last, 1000 do
    redis.call('PFADD', KEYS[k], unpack(values, j, math.min(j + 999, last)))
  end
  if expire then
    redis.call('EXPIRE', KEYS[k], ttl)
  end
  pos, k = last + 1, k + 1
  if exact then
    local key = KEYS[k]
    if redis.call('SISMEMBER', key, 0) == 0 then
      for j = pos, pos + n - 1, 1000 do
        redis.call('SADD', key, unpack(values, j, math.min(j + 999, pos + n - 1)))
      end
      local outgrown = redis.call('SCARD', key) > cap
      if outgrown then
        redis.call('DEL', key)
        redis.call('SADD', key, 0)
      end
      if expire or outgrown then
        redis.call('EXPIRE', key, ttl)
      end
    end
    pos, k = pos + n, k + 1
  end
end
return 0
"""

# Distinct visitors of a union of minutes: exact while every set is whole and all of them hold
# at most ARGV[1] members, else the HyperLogLog union. KEYS: n exact sets, then n sketches.
VISITORS_COUNT = """
local n, limit, total = #KEYS / 2, tonumber(ARGV[1]), 0
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[i], 0) == 1 then total = -1 break end
  total = total + redis.call('SCARD', KEYS[i])
  if total > limit then total = -1 break end
end
if total < 0 then
  return redis.call('PFCOUNT', unpack(KEYS, n + 1, 2 * n))
end
local seen, count = {}, 0
for i = 1, n do
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if not seen[member] then
      seen[member] = true
      count = count + 1
    end
  end
end
return count
"""

# Lua's unpack() is limited to a few thousand values: longer unions use the sketches alone.
MAX_EXACT_MINUTES = 3000
