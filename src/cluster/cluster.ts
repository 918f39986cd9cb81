import type { ClusterConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { ConnectionLeases } from './leases.js';
import { NodeRegistry, type NodeInfo, type NodeRegistryOptions } from './registry.js';
import { ClusterStore } from './store.js';

/** The registry's callbacks (what each node writes about itself) come with the config. */
export interface ClusterOptions extends Pick<NodeRegistryOptions, 'configVersion' | 'queueDepth' | 'startedAt'> {
  readonly config: ClusterConfig;
  readonly logger: Logger;
  /** The local clock (epoch ms); tests inject one. */
  readonly now?: () => number;
  /** A Redis command slower than this counts as Redis away (default 1 s); tests on a loaded machine give more. */
  readonly commandTimeoutMs?: number;
  /** How long an account goes without a transaction before its connection leases go back (tests set it short). */
  readonly leaseIdleMs?: number;
}

/** What /status and `sendas status --cluster` show of the cluster. */
export interface ClusterStatus {
  readonly node: string;
  readonly redis: 'up' | 'down';
  /** Since when Redis has been up or down (ISO). */
  readonly since: string;
  readonly problem?: string;
  /** The replicas each limit is divided by while Redis is down. */
  readonly replicas: number;
  readonly nodes: readonly NodeInfo[];
}

/**
 * The replicas' shared state (`cluster:`): the Redis connection and the node registry. The
 * features that share through it (rates and budgets, connection leases, OAuth tokens, the
 * guessing limiter) each take this object and fall back to their local share while `up` is false.
 * Each replica keeps its own durable queue: no message ever depends on Redis.
 */
export class Cluster {
  readonly store: ClusterStore;
  readonly registry: NodeRegistry;
  /** Each account's connection slots, leased from Redis (leases.ts). */
  readonly leases: ConnectionLeases;

  constructor(readonly opts: ClusterOptions) {
    this.store = new ClusterStore({ config: opts.config, logger: opts.logger, now: opts.now, commandTimeoutMs: opts.commandTimeoutMs });
    this.registry = new NodeRegistry({ store: this.store, ttlMs: opts.config.leaseTtlMs, configVersion: opts.configVersion, queueDepth: opts.queueDepth, startedAt: opts.startedAt });
    this.leases = new ConnectionLeases({ store: this.store, ttlMs: opts.config.leaseTtlMs, share: (limit) => this.share(limit), ...(opts.leaseIdleMs !== undefined ? { idleMs: opts.leaseIdleMs } : {}) });
  }

  get nodeId(): string {
    return this.store.nodeId;
  }

  get up(): boolean {
    return this.store.up;
  }

  get leaseTtlMs(): number {
    return this.opts.config.leaseTtlMs;
  }

  /** The live replicas last seen, this one included (at least 1). */
  replicas(): number {
    return this.registry.replicas();
  }

  /**
   * A replica's own share of a limit while Redis is away: the limit divided by the replicas last
   * seen, rounded down, never below 1 (mail keeps flowing; with more replicas than the limit the
   * sum can pass it, which README says).
   */
  share(limit: number): number {
    return Math.max(1, Math.floor(limit / this.replicas()));
  }

  /** Connects (a Redis that is down is no error) and joins the registry. */
  async start(): Promise<void> {
    await this.store.start();
    await this.registry.start();
    this.leases.start();
  }

  status(): ClusterStatus {
    const { store } = this;
    return {
      node: store.nodeId,
      redis: store.up ? 'up' : 'down',
      since: new Date(store.since).toISOString(),
      ...(!store.up && store.lastProblem ? { problem: store.lastProblem } : {}),
      replicas: this.replicas(),
      nodes: this.registry.nodes(),
    };
  }

  /** Leaves the registry and closes the connection: after the last delivery. */
  async stop(): Promise<void> {
    await this.leases.stop();
    await this.registry.stop();
    await this.store.close();
  }
}
