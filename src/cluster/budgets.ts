import type { Cluster } from './cluster.js';

/** One minute's use, as the scripts take and give it: [bucket start ms, messages, recipients]. */
export type BucketTriple = readonly [at: number, messages: number, recipients: number];

/** What the shared count said to a reservation. */
export type SharedReply =
  /** Counted; the use now, this reservation included. */
  | { readonly ok: true; readonly messages: number; readonly recipients: number }
  /** Not counted: every replica's buckets, oldest first, for delivery to say which budget and when room frees. */
  | { readonly ok: false; readonly buckets: BucketTriple[] };

// The keys of one account: G the sum of every replica's use (fields m:<at>, r:<at> per minute
// bucket, and the totals m, r), GZ its bucket starts; N this replica's own part of G (the same
// fields), NZ its bucket starts. A replica's part is what lets it be replaced whole (SYNC) after
// Redis was away or lost everything, without counting anything twice.
const COMMON = `
local function num(v) return tonumber(v) or 0 end
local function prune(z, h, cutoff, totals)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
  for _, at in ipairs(old) do
    if totals then
      redis.call('HINCRBY', h, 'm', -num(redis.call('HGET', h, 'm:' .. at)))
      redis.call('HINCRBY', h, 'r', -num(redis.call('HGET', h, 'r:' .. at)))
    end
    redis.call('HDEL', h, 'm:' .. at, 'r:' .. at)
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff) end
end
local function add(at, m, r)
  for _, pair in ipairs({{KEYS[1], KEYS[2], true}, {KEYS[3], KEYS[4], false}}) do
    redis.call('HINCRBY', pair[1], 'm:' .. at, m)
    redis.call('HINCRBY', pair[1], 'r:' .. at, r)
    if pair[3] then
      redis.call('HINCRBY', pair[1], 'm', m)
      redis.call('HINCRBY', pair[1], 'r', r)
    end
    redis.call('ZADD', pair[2], at, at)
  end
end
-- takes up to m, r of this replica's part of bucket at out of both (never below zero)
local function take(at, m, r)
  local dm = math.min(m, num(redis.call('HGET', KEYS[3], 'm:' .. at)), num(redis.call('HGET', KEYS[1], 'm:' .. at)))
  local dr = math.min(r, num(redis.call('HGET', KEYS[3], 'r:' .. at)), num(redis.call('HGET', KEYS[1], 'r:' .. at)))
  if dm > 0 then
    redis.call('HINCRBY', KEYS[3], 'm:' .. at, -dm)
    redis.call('HINCRBY', KEYS[1], 'm:' .. at, -dm)
    redis.call('HINCRBY', KEYS[1], 'm', -dm)
  end
  if dr > 0 then
    redis.call('HINCRBY', KEYS[3], 'r:' .. at, -dr)
    redis.call('HINCRBY', KEYS[1], 'r:' .. at, -dr)
    redis.call('HINCRBY', KEYS[1], 'r', -dr)
  end
end
local function expire(ttl)
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
`;

// ARGV: now, the window (a bucket counts while at > now - window), ttl, bucket start, messages,
// recipients, the messages and recipients limits (-1: not counted). Prunes, checks room as
// delivery/budget.ts roomFor does (more than a whole budget needs an empty window), adds.
const RESERVE = `${COMMON}
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[2])
prune(KEYS[2], KEYS[1], cutoff, true)
prune(KEYS[4], KEYS[3], cutoff, false)
local used = {num(redis.call('HGET', KEYS[1], 'm')), num(redis.call('HGET', KEYS[1], 'r'))}
local want = {tonumber(ARGV[5]), tonumber(ARGV[6])}
local limit = {tonumber(ARGV[7]), tonumber(ARGV[8])}
for i = 1, 2 do
  if limit[i] >= 0 and used[i] + math.min(want[i], limit[i]) > limit[i] then
    local out = {0}
    for _, at in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
      table.insert(out, tonumber(at))
      table.insert(out, num(redis.call('HGET', KEYS[1], 'm:' .. at)))
      table.insert(out, num(redis.call('HGET', KEYS[1], 'r:' .. at)))
    end
    return out
  end
end
add(ARGV[4], want[1], want[2])
expire(tonumber(ARGV[3]))
return {1, used[1] + want[1], used[2] + want[2]}
`;

// ARGV: bucket start, messages, recipients: what a reservation did not use, taken out of this
// replica's part only (a give-back for a reservation Redis never saw takes nothing from the others).
const GIVE_BACK = `${COMMON}
take(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return 1
`;

// ARGV: now, window, ttl, then this replica's buckets as triples (at, messages, recipients).
// Replaces the replica's part by its own count (state_dir/budgets): what it counted while Redis
// was away is added, and after Redis lost everything each replica puts its part back.
const SYNC = `${COMMON}
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[2])
prune(KEYS[2], KEYS[1], cutoff, true)
prune(KEYS[4], KEYS[3], cutoff, false)
for _, at in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  take(at, num(redis.call('HGET', KEYS[3], 'm:' .. at)), num(redis.call('HGET', KEYS[3], 'r:' .. at)))
end
redis.call('DEL', KEYS[3], KEYS[4])
for i = 4, #ARGV, 3 do
  if tonumber(ARGV[i]) > cutoff then add(ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])) end
end
expire(tonumber(ARGV[3]))
return {num(redis.call('HGET', KEYS[1], 'm')), num(redis.call('HGET', KEYS[1], 'r'))}
`;

// ARGV: now, window. The use now, pruned (for /status and metrics between reservations).
const PEEK = `${COMMON}
prune(KEYS[2], KEYS[1], tonumber(ARGV[1]) - tonumber(ARGV[2]), true)
return {num(redis.call('HGET', KEYS[1], 'm')), num(redis.call('HGET', KEYS[1], 'r'))}
`;

type ScriptName = 'reserve' | 'giveBack' | 'sync' | 'peek';
type Script = (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;

/**
 * The accounts' daily budgets counted by every replica together in Redis. Only the counting is
 * here (plain numbers in and out, the time given by the caller); what the numbers mean is
 * delivery's (delivery/budget.ts). Every call answers undefined while Redis is away.
 */
export class SharedBudgets {
  private readonly scripts: Record<ScriptName, Script>;
  /** Bumped each time Redis answers again: every account syncs its part once per generation. */
  generation = 0;

  constructor(
    readonly cluster: Cluster,
    /** How long a bucket counts after its start (budget.ts: a minute, the slack and 24 h). */
    private readonly windowMs: number,
  ) {
    const { store } = cluster;
    this.scripts = {
      reserve: store.script('sendasBudgetReserve', RESERVE, 4),
      giveBack: store.script('sendasBudgetGiveBack', GIVE_BACK, 4),
      sync: store.script('sendasBudgetSync', SYNC, 4),
      peek: store.script('sendasBudgetPeek', PEEK, 4),
    };
    store.onHealth((up) => {
      if (up) this.generation++;
    });
  }

  async reserve(account: string, at: number, want: { messages: number; recipients: number }, limits: { messages: number | undefined; recipients: number | undefined }, now: number): Promise<SharedReply | undefined> {
    const reply = await this.run('reserve', account, [now, this.windowMs, this.ttl(), at, want.messages, want.recipients, limits.messages ?? -1, limits.recipients ?? -1]);
    if (!reply) return undefined;
    if (reply[0] === 1) return { ok: true, messages: reply[1]!, recipients: reply[2]! };
    const buckets: BucketTriple[] = [];
    for (let i = 1; i + 2 < reply.length; i += 3) buckets.push([reply[i]!, reply[i + 1]!, reply[i + 2]!]);
    return { ok: false, buckets };
  }

  async giveBack(account: string, at: number, want: { messages: number; recipients: number }): Promise<boolean> {
    return (await this.run('giveBack', account, [at, want.messages, want.recipients])) !== undefined;
  }

  /** Replaces this replica's part of the account's count by `buckets`; the use now after it. */
  async sync(account: string, buckets: readonly BucketTriple[], now: number): Promise<{ messages: number; recipients: number } | undefined> {
    const reply = await this.run('sync', account, [now, this.windowMs, this.ttl(), ...buckets.flat()]);
    return reply && { messages: reply[0]!, recipients: reply[1]! };
  }

  async peek(account: string, now: number): Promise<{ messages: number; recipients: number } | undefined> {
    const reply = await this.run('peek', account, [now, this.windowMs]);
    return reply && { messages: reply[0]!, recipients: reply[1]! };
  }

  private async run(name: ScriptName, account: string, args: (string | number)[]): Promise<number[] | undefined> {
    const { store } = this.cluster;
    const keys = [store.key('budget', account), store.key('budget', account, 'at'), store.key('budget', account, 'node', store.nodeId), store.key('budget', account, 'node', store.nodeId, 'at')];
    const reply = await store.run(() => this.scripts[name](keys, args));
    return Array.isArray(reply) ? reply.map(Number) : reply === undefined ? undefined : [Number(reply)];
  }

  /** Keys outlive their last bucket by a minute, then Redis drops them: nothing is left behind. */
  private ttl(): number {
    return this.windowMs + 60_000;
  }
}
