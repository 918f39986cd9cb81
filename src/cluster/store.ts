import { createRequire } from 'node:module';
import type { Redis } from 'ioredis';
import type { ClusterConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { describeRedis } from '../config/cluster.js';

/** This build's version, for the node registry (package.json, one level above src/ and dist/). */
export const RELAY_VERSION: string = (createRequire(import.meta.url)('../../package.json') as { version?: string }).version ?? 'unknown';

// loaded when a cluster is configured: a single relay and every CLI command start without it
const loadRedis = (): typeof Redis => (createRequire(import.meta.url)('ioredis') as { Redis: typeof Redis }).Redis;

/** What the store tells its users about Redis: up (answering) or not. */
export type HealthListener = (up: boolean) => void;

export interface ClusterStoreOptions {
  readonly config: ClusterConfig;
  readonly logger: Logger;
  /** The local clock (epoch ms); tests inject one. The shared clock is this plus the offset to Redis' TIME. */
  readonly now?: () => number;
  /**
   * A command taking longer than this counts as Redis being down (a slow Redis must not hold up
   * mail): the caller falls back to its local share at once.
   */
  readonly commandTimeoutMs?: number;
}

/**
 * The one connection to the replicas' shared Redis, and what every user of it needs: the key
 * prefix, whether Redis answers (callers fall back to their local share when it doesn't, and
 * never see an exception), a clock shared by the replicas (Redis' TIME), and Lua scripts run
 * atomically by name. Everything that is shared lives in modules beside this one; the store
 * knows nothing of limits or tokens.
 *
 * ioredis with `enableOfflineQueue: false`: a command while disconnected fails at once instead of
 * waiting for the connection to come back, so mail is never held up by Redis; the client keeps
 * reconnecting in the background.
 */
export class ClusterStore {
  readonly redis: Redis;
  readonly nodeId: string;
  readonly prefix: string;
  private healthy = false;
  private readonly listeners = new Set<HealthListener>();
  private readonly localNow: () => number;
  private offsetMs = 0;
  private closed = false;
  /** The last reason Redis was counted down, for /status. */
  lastProblem: string | undefined;
  /** When `up` last changed (epoch ms, local clock). */
  since: number;

  constructor(private readonly opts: ClusterStoreOptions) {
    this.nodeId = opts.config.nodeId;
    this.prefix = opts.config.keyPrefix;
    this.localNow = opts.now ?? Date.now;
    this.since = this.localNow();
    const RedisClient = loadRedis();
    const { tls, sentinel } = opts.config;
    this.redis = new RedisClient(opts.config.url.reveal(), {
      // through Sentinel the master is asked for at each (re)connect, so a failover is followed: the
      // old master's connection closes (Redis down for a moment, local shares), the new one's opens
      ...(sentinel ? { sentinels: sentinel.hosts.map((h) => ({ host: h.host, port: h.port })), name: sentinel.master, ...(sentinel.password ? { sentinelPassword: sentinel.password.reveal() } : {}) } : {}),
      // rediss:// verifies Redis' certificate against the system's CAs unless cluster.redis.tls.ca names one
      ...(tls ? { tls: { ...(tls.ca !== undefined ? { ca: tls.ca } : {}), ...(tls.cert !== undefined && tls.key ? { cert: tls.cert, key: tls.key.reveal() } : {}) } } : {}),
      lazyConnect: true,
      enableOfflineQueue: false,
      // a command in flight when the connection drops fails at once and is not sent again to the
      // Redis that comes back: it carries its time (a lease's expiry, a send's place in the window)
      // and the caller has already fallen back to its local share, so a late replay would count twice
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      commandTimeout: opts.commandTimeoutMs ?? 1_000,
      connectTimeout: 2_000,
      // ioredis waits this long for a socket that already failed to close (its timer outlives it):
      // `sendas status --cluster` on a refused Redis took 2 s to exit
      disconnectTimeout: 200,
      // reconnect for ever, at most every 2 s: the replicas converge again when Redis is back
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2_000),
      connectionName: `sendas:${this.nodeId}`,
    });
    this.redis.on('ready', () => this.setUp(true));
    this.redis.on('error', (err: Error) => this.setDown(err));
    this.redis.on('close', () => this.setDown(new Error('connection closed')));
  }

  /** Connects (at most connectTimeout); a Redis that is down now is no error: the relay starts on its local shares. */
  async start(): Promise<void> {
    try {
      await this.redis.connect();
      await this.syncClock();
    } catch (err) {
      this.setDown(err as Error);
    }
  }

  get up(): boolean {
    return this.healthy;
  }

  /** Called with the new state each time Redis goes down or comes back. */
  onHealth(listener: HealthListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A key under the prefix: key('rate', account) → "sendas:rate:account". */
  key(...parts: string[]): string {
    return [this.prefix, ...parts].join(':');
  }

  /** The replicas' shared clock: this host's clock corrected by the offset to Redis' TIME (measured at start and at each syncClock). */
  now(): number {
    return this.localNow() + this.offsetMs;
  }

  /** Measures the offset of the local clock to Redis' TIME (half the round trip taken as the delay). */
  async syncClock(): Promise<void> {
    const before = this.localNow();
    const [sec, usec] = (await this.redis.time()) as [string | number, string | number];
    const after = this.localNow();
    const redisMs = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    this.offsetMs = redisMs - Math.round((before + after) / 2);
  }

  /**
   * Runs `fn` against Redis; undefined when Redis is down or the command failed or timed out (the
   * caller uses its local share). A failure marks Redis down until the client is ready again.
   */
  async run<T>(fn: (redis: Redis) => Promise<T>): Promise<T | undefined> {
    if (!this.healthy || this.closed) return undefined;
    try {
      return await fn(this.redis);
    } catch (err) {
      // a script error is a bug, not an outage: said, and the caller falls back all the same
      if (isScriptError(err)) this.opts.logger.error({ err: { message: (err as Error).message } }, 'a cluster script failed');
      else this.setDown(err as Error);
      return undefined;
    }
  }

  /**
   * A Lua script run atomically by name (EVALSHA, the script sent again when Redis lost it):
   * the returned function takes the keys and the arguments.
   */
  script(name: string, lua: string, numberOfKeys: number): (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown> {
    if (!(name in this.redis)) this.redis.defineCommand(name, { lua, numberOfKeys });
    return (keys, args) => (this.redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[name]!(...keys, ...args);
  }

  /** Ends the connection (after the node left the registry). */
  async close(): Promise<void> {
    this.closed = true;
    try {
      if (this.redis.status === 'ready') await this.redis.quit();
      else this.redis.disconnect();
    } catch {
      this.redis.disconnect();
    }
  }

  private setUp(up: true): void {
    if (this.healthy === up) return;
    this.healthy = true;
    this.warned = false;
    this.since = this.localNow();
    if (this.connectedOnce) this.opts.logger.info({ redis: this.where() }, 'cluster: Redis answers again; the replicas share their limits again');
    else this.opts.logger.info({ redis: this.where(), node: this.nodeId, prefix: this.prefix }, 'cluster: connected to Redis');
    this.connectedOnce = true;
    void this.syncClock().catch(() => undefined);
    for (const l of this.listeners) l(true);
  }

  private setDown(err: Error): void {
    if (this.closed) return;
    const wasUp = this.healthy;
    // the reason stays the one that says why (a certificate refused, a refused connection): the
    // "closed" that follows it says nothing more
    if (wasUp || this.lastProblem === undefined || !CLOSED.test(err.message)) this.lastProblem = err.message;
    this.healthy = false;
    if (wasUp) this.since = this.localNow();
    // once per outage: ioredis reports every reconnect attempt
    if (!this.warned) {
      this.warned = true;
      this.opts.logger.warn(
        { redis: this.where(), err: { message: this.lastProblem } },
        'cluster: Redis does not answer; each replica keeps its own share of every limit (the limit divided by the replicas last seen) until it is back',
      );
    }
    if (wasUp) for (const l of this.listeners) l(false);
  }

  private warned = false;
  private connectedOnce = false;

  /** host:port of the Redis in use, never the URL (it may carry the password). */
  private where(): string {
    return describeRedis(this.opts.config);
  }
}

const CLOSED = /^connection (is )?closed\.?$/i;

function isScriptError(err: unknown): boolean {
  const m = (err as Error)?.message ?? '';
  return /^ERR (Error running script|user_script)|^WRONGTYPE/.test(m);
}
