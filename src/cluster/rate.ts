import type { Cluster } from './cluster.js';

// KEYS[1] the account's window (a sorted set of sends by start time); ARGV: now, window ms, limit, member.
// Drops the sends that left the window; takes a slot when fewer than the limit remain (0), else
// says how long until the oldest leaves (ms, at least 1).
const TAKE = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
`;

// KEYS[1] the account's window; ARGV: now, window ms, then member and start time pairs: sends a
// replica made on its own while Redis was away, put in so the window counts them too.
const ADD = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > now - window then redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window)
return redis.call('ZCARD', KEYS[1])
`;

/**
 * Every replica's sends of one account in one sliding window in Redis: at most `count` start in
 * any `windowMs`, whichever replica starts them. Only the taking is here; waiting and the local
 * fallback are delivery's (delivery/shared-rate.ts).
 */
export class SharedWindows {
  private readonly take: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private readonly addSends: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private seq = 0;

  constructor(readonly cluster: Cluster) {
    this.take = cluster.store.script('sendasRateTake', TAKE, 1);
    this.addSends = cluster.store.script('sendasRateAdd', ADD, 1);
  }

  /** Counts sends made without Redis (their start times, the shared clock) in the account's window; false while Redis is away. */
  async add(account: string, starts: readonly number[], windowMs: number, now: number): Promise<boolean> {
    const { store } = this.cluster;
    const args: (string | number)[] = [Math.floor(now), windowMs];
    for (const at of starts) args.push(`${store.nodeId}:${at}:${++this.seq}:away`, Math.floor(at));
    return (await store.run(() => this.addSends([store.key('rate', account)], args))) !== undefined;
  }

  /**
   * Takes a slot in the account's window at `now` (the shared clock): 0 when taken, else the ms
   * until one frees; undefined while Redis is away (the caller uses its local share).
   */
  async tryTake(account: string, count: number, windowMs: number, now: number): Promise<number | undefined> {
    const { store } = this.cluster;
    // unique per send: two sends in the same millisecond are two members
    const member = `${store.nodeId}:${now}:${++this.seq}`;
    const reply = await store.run(() => this.take([store.key('rate', account)], [Math.floor(now), windowMs, count, member]));
    return reply === undefined ? undefined : Number(reply);
  }
}
