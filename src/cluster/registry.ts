import { RELAY_VERSION, type ClusterStore } from './store.js';

/** One live replica as the registry has it. */
export interface NodeInfo {
  readonly node: string;
  readonly version: string;
  /** The config version (config/version.ts) the replica runs. */
  readonly config: string;
  readonly queueDepth: number;
  /** Its last heartbeat (ISO time, the shared clock). */
  readonly heartbeat: string;
  readonly startedAt: string;
}

export interface NodeRegistryOptions {
  readonly store: ClusterStore;
  /** A node missing its heartbeats this long is gone (cluster.lease_ttl). */
  readonly ttlMs: number;
  readonly configVersion: () => string;
  readonly queueDepth: () => number;
  readonly startedAt: Date;
}

// KEYS[1] the node's key, KEYS[2] the set of nodes by heartbeat; ARGV: node id, its JSON, now, ttl.
// Drops the nodes whose heartbeat is older than the TTL, returns the live ones' JSON.
const HEARTBEAT = `
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(ARGV[3]) - tonumber(ARGV[4])))
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('GET', ARGV[5] .. id)
  if v then table.insert(out, v) end
end
return out
`;

/**
 * The node registry: each replica writes its entry (id, version, config version, queue depth,
 * heartbeat) every third of the TTL, and reads every live one back in the same script. The number
 * of replicas last seen is what each one divides the limits by while Redis is away.
 */
export class NodeRegistry {
  private seen: NodeInfo[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly beat: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private beating: Promise<void> | undefined;

  constructor(private readonly opts: NodeRegistryOptions) {
    this.beat = opts.store.script('sendasHeartbeat', HEARTBEAT, 2);
  }

  /** The first heartbeat (when Redis answers), then one every third of the TTL. */
  async start(): Promise<void> {
    await this.heartbeat();
    this.timer = setInterval(() => void this.heartbeat(), Math.max(500, Math.floor(this.opts.ttlMs / 3)));
    this.timer.unref();
    // back from an outage: in the registry again at once, not at the next beat
    this.opts.store.onHealth((up) => {
      if (up) void this.heartbeat();
    });
  }

  /** The live replicas at the last heartbeat, this one first; only this one while Redis has never answered. */
  nodes(): NodeInfo[] {
    return this.seen.length > 0 ? this.seen : [this.own()];
  }

  /** How many replicas share each limit: the live ones last seen (at least 1). */
  replicas(): number {
    return Math.max(1, this.seen.length);
  }

  /** Writes this node's entry and reads the live ones. */
  heartbeat(): Promise<void> {
    this.beating ??= this.doHeartbeat().finally(() => (this.beating = undefined));
    return this.beating;
  }

  /** Leaves the registry (a clean stop): the others stop counting this replica at once. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    const { store } = this.opts;
    await store.run((r) => r.multi().del(store.key('node', store.nodeId)).zrem(store.key('nodes'), store.nodeId).exec());
  }

  private async doHeartbeat(): Promise<void> {
    const { store, ttlMs } = this.opts;
    const own = this.own();
    const live = await store.run((r) => this.beat([store.key('node', store.nodeId), store.key('nodes')], [store.nodeId, JSON.stringify(own), store.now(), ttlMs, store.key('node', '')]));
    if (!Array.isArray(live)) return; // Redis away: the count last seen stays
    const nodes = live.flatMap((v) => {
      const info = nodeInfoOf(String(v));
      return info ? [info] : [];
    });
    nodes.sort((a, b) => (a.node === store.nodeId ? -1 : b.node === store.nodeId ? 1 : a.node.localeCompare(b.node)));
    this.seen = nodes;
  }

  private own(): NodeInfo {
    const { store } = this.opts;
    return {
      node: store.nodeId,
      version: RELAY_VERSION,
      config: this.opts.configVersion(),
      queueDepth: this.opts.queueDepth(),
      heartbeat: new Date(store.now()).toISOString(),
      startedAt: this.opts.startedAt.toISOString(),
    };
  }
}

/**
 * A registry entry as another replica wrote it, or undefined when it names no node: a replica of
 * another build may lack a field (a rolling upgrade), which then reads "?" rather than breaking
 * /status or `sendas status --cluster`.
 */
export function nodeInfoOf(json: string): NodeInfo | undefined {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || typeof v.node !== 'string') return undefined;
  const text = (x: unknown) => (typeof x === 'string' ? x : '?');
  return { node: v.node, version: text(v.version), config: text(v.config), queueDepth: typeof v.queueDepth === 'number' ? v.queueDepth : 0, heartbeat: text(v.heartbeat), startedAt: text(v.startedAt) };
}
