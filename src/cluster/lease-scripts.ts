/** The Lua scripts of the connection leases (leases.ts), each run atomically. */

// KEYS[1] the account's leases (member = lease, score = expiry), KEYS[2] the replicas waiting for
// their first lease of it in order (score = since when), KEYS[3] when each of them last asked;
// ARGV: now, ttl, limit, the new lease's name, the node, how many it holds. Drops the expired
// leases and the waiters that stopped asking; takes a free lease if fewer replicas wait ahead of
// this one than there are free leases; else a node holding none queues up, and the answer is
// when the earliest lease expires.
export const ACQUIRE = `
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local node = ARGV[5]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - ttl)) do
  redis.call('ZREM', KEYS[2], gone)
  redis.call('ZREM', KEYS[3], gone)
end
local free = tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1])
local ahead = redis.call('ZRANK', KEYS[2], node) or redis.call('ZCARD', KEYS[2])
if free > ahead then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
  redis.call('ZREM', KEYS[2], node)
  redis.call('ZREM', KEYS[3], node)
  redis.call('PEXPIRE', KEYS[1], 2 * ttl)
  return {1, 0}
end
if tonumber(ARGV[6]) == 0 then
  redis.call('ZADD', KEYS[2], 'NX', now, node)
  redis.call('ZADD', KEYS[3], now, node)
  redis.call('PEXPIRE', KEYS[2], 2 * ttl)
  redis.call('PEXPIRE', KEYS[3], 2 * ttl)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(first[2] or now)}
`;

// ARGV: now, ttl, this node, the number of accounts, then per account its leases' key, the key of
// when its waiters last asked, its limit, the count n and n members (the keys in ARGV: how many there are
// varies; one Redis is used, never a Redis Cluster). Each member still held (or free again while
// fewer than the limit are held: an outage let it expire, Redis restarted empty) gets a new
// expiry; returns, per account, how many other replicas wait for their first lease, then the
// members kept.
export const RENEW = `
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local node = ARGV[3]
local i = 5
local out = {}
for k = 1, tonumber(ARGV[4]) do
  local key = ARGV[i]
  local wish = ARGV[i + 1]
  local limit = tonumber(ARGV[i + 2])
  local n = tonumber(ARGV[i + 3])
  i = i + 4
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local asked = redis.call('ZSCORE', wish, node)
  local mine = (asked and tonumber(asked) > now - ttl) and 1 or 0
  local waiting = redis.call('ZCOUNT', wish, '(' .. (now - ttl), '+inf') - mine
  local kept = {waiting}
  for m = 1, n do
    local member = ARGV[i]
    i = i + 1
    if redis.call('ZSCORE', key, member) or redis.call('ZCARD', key) < limit then
      redis.call('ZADD', key, now + ttl, member)
      table.insert(kept, member)
    end
  end
  redis.call('PEXPIRE', key, 2 * ttl)
  out[k] = kept
end
return out
`;
