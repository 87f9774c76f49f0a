"""The Lua scripts behind ``RedisCounters``: each operation is one script, so one atomic round trip.
The key layout they share is described in governance/redis_counters.py."""

# Shared by the scripts that judge or report "reserved": lapse by the server's clock, never a client's.
LAPSE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Drop reservations whose holder never settled (its process died), so they block nobody.
local function sweep(c, d, now)
  local lapsed = redis.call('ZRANGEBYSCORE', d, '-inf', now)
  for _, rid in ipairs(lapsed) do
    local amount = redis.call('HGET', c, 'r:' .. rid)
    if amount then
      redis.call('HDEL', c, 'r:' .. rid)
      redis.call('HINCRBY', c, 'reserved', string.format('%d', -tonumber(amount)))  -- not '-0'
    end
  end
  if #lapsed > 0 then redis.call('ZREMRANGEBYSCORE', d, '-inf', now) end
end
"""

# ARGV: prefix, lease ms, owner, JSON [[request id, [[key, amount, limit, expire_at_ms], ...]], ...].
# Returns the refused requests, flat: position in the batch (from 0), index of the ask, used, reserved;
# used = -1 when that counter is not ready (never seeded, or lost: a flush, an eviction, a restart).
# JSON numbers are Lua doubles (exact below 2^53); '%d' writes them back as the integers Redis wants.
RESERVE = (
    LAPSE
    + """
local prefix, now, owner = ARGV[1], now_ms(), ARGV[3]
local deadline = string.format('%d', now + tonumber(ARGV[2]))
local own = prefix .. 'o:' .. owner
local swept = {}  -- once per counter and batch: nothing this batch reserves lapses before its deadline
local function state(key)
  local c = prefix .. 'c:' .. key
  if not swept[c] then
    sweep(c, prefix .. 'd:' .. key, now)
    swept[c] = true
  end
  local v = redis.call('HMGET', c, 'used', 'reserved', 's')
  if not v[3] then return nil end
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end
local function reserve(rid, asks)
  for i, a in ipairs(asks) do
    local used, reserved = state(a[1])
    if used == nil then return {i - 1, -1, 0} end
    if used + reserved + a[2] > a[3] then return {i - 1, used, reserved} end
  end
  local q = prefix .. 'q:' .. rid
  for _, a in ipairs(asks) do
    local c, d = prefix .. 'c:' .. a[1], prefix .. 'd:' .. a[1]
    local amount, expire = string.format('%d', a[2]), string.format('%d', a[4])
    redis.call('HINCRBY', c, 'reserved', amount)
    redis.call('HINCRBY', c, 'r:' .. rid, amount)
    redis.call('ZADD', d, deadline, rid)
    redis.call('PEXPIREAT', c, expire)
    redis.call('PEXPIREAT', d, expire)
    redis.call('SADD', q, a[1])
  end
  if #asks > 0 then
    redis.call('PEXPIREAT', q, deadline)
    redis.call('SADD', own, rid)
    redis.call('PEXPIRE', own, 604800000)
  end
end
local refused = {}
for pos, req in ipairs(cjson.decode(ARGV[4])) do
  local r = reserve(req[1], req[2])
  if r then
    for _, x in ipairs({pos - 1, r[1], r[2], r[3]}) do refused[#refused + 1] = x end
  end
end
return refused
"""
)

# Releasing a lapsed but not yet swept reservation is what the sweep would do, so no clock here.
RELEASE = """
local function release(prefix, key, rid)
  local c = prefix .. 'c:' .. key
  local amount = redis.call('HGET', c, 'r:' .. rid)
  if amount then
    redis.call('HDEL', c, 'r:' .. rid)
    redis.call('HINCRBY', c, 'reserved', string.format('%d', -tonumber(amount)))  -- not '-0'
  end
  redis.call('ZREM', prefix .. 'd:' .. key, rid)
end
local function release_all(prefix, rid)
  local q = prefix .. 'q:' .. rid
  for _, key in ipairs(redis.call('SMEMBERS', q)) do release(prefix, key, rid) end
  redis.call('DEL', q)
end
"""

# ARGV: prefix, owner, JSON [[request id, [[key, used, expire_at_ms], ...]], ...].
# Use added to a counter that is not ready is harmless: seeding starts it from zero again.
SETTLE = (
    RELEASE
    + """
local prefix, own = ARGV[1], ARGV[1] .. 'o:' .. ARGV[2]
local function settle(rid, commits)
  release_all(prefix, rid)
  redis.call('SREM', own, rid)
  for _, cm in ipairs(commits) do
    release(prefix, cm[1], rid)  -- q:R is gone once R lapsed; a lapsed entry may still sit here unswept
    if cm[2] ~= 0 then
      local c = prefix .. 'c:' .. cm[1]
      redis.call('HINCRBY', c, 'used', string.format('%d', cm[2]))
      redis.call('PEXPIREAT', c, string.format('%d', cm[3]))
    end
  end
end
for _, req in ipairs(cjson.decode(ARGV[3])) do settle(req[1], req[2]) end
return 0
"""
)

# ARGV: prefix, lease ms, JSON [[request id, [key, ...]], ...]: the requests still running keep their room.
RENEW = (
    LAPSE
    + """
local prefix = ARGV[1]
local deadline = string.format('%d', now_ms() + tonumber(ARGV[2]))
for _, req in ipairs(cjson.decode(ARGV[3])) do
  local rid = req[1]
  for _, key in ipairs(req[2]) do
    local d = prefix .. 'd:' .. key
    if redis.call('ZSCORE', d, rid) then redis.call('ZADD', d, deadline, rid) end
  end
  if redis.call('EXISTS', prefix .. 'q:' .. rid) == 1 then redis.call('PEXPIREAT', prefix .. 'q:' .. rid, deadline) end
end
return 0
"""
)

# ARGV: prefix, owner. A restarted process releases every reservation its previous life held.
RECLAIM = (
    RELEASE
    + """
local prefix, own = ARGV[1], ARGV[1] .. 'o:' .. ARGV[2]
local rids = redis.call('SMEMBERS', own)
for _, rid in ipairs(rids) do release_all(prefix, rid) end
redis.call('DEL', own)
return #rids
"""
)

# KEYS: c. ARGV: expire_at_ms, seeding lease ms, token. 0: ready; 2: another is seeding; 1: this caller
# seeds (use starts from zero; settles from now on add to it; reservations in flight are kept).
BEGIN_SEED = (
    LAPSE
    + """
local v = redis.call('HMGET', KEYS[1], 's', 'seeding')
if v[1] then return 0 end
local now = now_ms()
if v[2] and tonumber(string.match(v[2], '^%d+')) > now then return 2 end
redis.call('HSET', KEYS[1], 'used', 0, 'seeding', string.format('%d', now + tonumber(ARGV[2])) .. ':' .. ARGV[3])
redis.call('HSETNX', KEYS[1], 'reserved', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""
)

# KEYS: c. ARGV: amount, token. Only the seeder that still holds the seeding adds its figure.
FINISH_SEED = """
local v = redis.call('HGET', KEYS[1], 'seeding')
if not v or string.match(v, ':(.*)$') ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[1], 'used', ARGV[1])
redis.call('HDEL', KEYS[1], 'seeding')
redis.call('HSET', KEYS[1], 's', 1)
return 1
"""

# KEYS: c. ARGV: amount. Only a ready counter is corrected (one being seeded gets the ledger's figure anyway).
CORRECT = """
if not redis.call('HGET', KEYS[1], 's') then return 0 end
redis.call('HINCRBY', KEYS[1], 'used', ARGV[1])
return 1
"""

# KEYS: c. The next reserve seeds it again.
INVALIDATE = """
redis.call('HDEL', KEYS[1], 's')
return 0
"""

# KEYS: c. ARGV: used, expire_at_ms. Set a counter's use and mark it ready, unless it is ready already.
SEED = """
if redis.call('HGET', KEYS[1], 's') then return 0 end
redis.call('HSET', KEYS[1], 'used', ARGV[1], 's', 1)
redis.call('HSETNX', KEYS[1], 'reserved', 0)
redis.call('HDEL', KEYS[1], 'seeding')
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""

# KEYS: c, d per key. Returns {used, reserved} per key, lapsed reservations swept first.
USAGE = (
    LAPSE
    + """
local now, out = now_ms(), {}
for i = 1, #KEYS / 2 do
  local c = KEYS[2 * i - 1]
  sweep(c, KEYS[2 * i], now)
  local v = redis.call('HMGET', c, 'used', 'reserved')
  out[i] = {tonumber(v[1]) or 0, tonumber(v[2]) or 0}
end
return out
"""
)
