import type { Cluster } from './cluster.js';

// KEYS[1] the account's window: a sorted set of sends scored by when the upstream may count them.
// ARGV: now, window ms, limit, member. A send is taken in flight, scored a window ahead of its
// start: until it is settled (SETTLE) it counts as if it could arrive at any moment. Drops the
// sends that left the window; takes a slot when fewer than the limit remain (0), else says how
// long until the oldest leaves (ms, at least 1; while that one is still in flight, at most 100:
// it is settled at its reply and frees the slot sooner).
const TAKE = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + window, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 2 * window)
  return 0
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
if oldest > now then return math.max(1, math.min(100, oldest + window - now)) end
return math.max(1, oldest + window - now)
`;

// KEYS[1] the account's window; ARGV: member, the time the upstream answered. The send counts
// from then on for one window (XX: a send the window already dropped is not put back).
const SETTLE = `
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
return 0
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
 * Every replica's sends of one account in one sliding window in Redis: at most `count` of them
 * can reach the upstream in any `windowMs`, whichever replica sends them. Counting starts alone
 * is not enough: connect, TLS and AUTH take longer for one send than another, so two sends started
 * a window apart can arrive closer. A send therefore counts from its start until one window after
 * the upstream answered it (its arrival lies between the two): if `count + 1` arrived within one
 * window, the last of them to start would have seen the other `count` in the window and waited. Only the taking is here; waiting and the local
 * fallback are delivery's (delivery/shared-rate.ts).
 */
export class SharedWindows {
  private readonly take: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private readonly addSends: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private readonly settleSend: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private seq = 0;

  constructor(readonly cluster: Cluster) {
    this.take = cluster.store.script('sendasRateTake', TAKE, 1);
    this.addSends = cluster.store.script('sendasRateAdd', ADD, 1);
    this.settleSend = cluster.store.script('sendasRateSettle', SETTLE, 1);
  }

  /** Counts sends made without Redis (their start times, the shared clock) in the account's window; false while Redis is away. */
  async add(account: string, starts: readonly number[], windowMs: number, now: number): Promise<boolean> {
    const { store } = this.cluster;
    const args: (string | number)[] = [Math.floor(now), windowMs];
    for (const at of starts) args.push(`${store.nodeId}:${at}:${++this.seq}:away`, Math.floor(at));
    return (await store.run(() => this.addSends([store.key('rate', account)], args))) !== undefined;
  }

  /**
   * Takes a slot in the account's window at `now` (the shared clock): the send's member when
   * taken (settle() it at the upstream's reply), else the ms until one frees; undefined while
   * Redis is away (the caller uses its local share).
   */
  async tryTake(account: string, count: number, windowMs: number, now: number): Promise<{ member: string } | number | undefined> {
    const { store } = this.cluster;
    // unique per send: two sends in the same millisecond are two members
    const member = `${store.nodeId}:${now}:${++this.seq}`;
    const reply = await store.run(() => this.take([store.key('rate', account)], [Math.floor(now), windowMs, count, member]));
    if (reply === undefined) return undefined;
    return Number(reply) === 0 ? { member } : Number(reply);
  }

  /** The upstream answered the send at `at` (the shared clock): it counts from then for one window. Never waited for. */
  settle(account: string, member: string, at: number): void {
    const { store } = this.cluster;
    void store.run(() => this.settleSend([store.key('rate', account)], [member, Math.floor(at)]));
  }
}
