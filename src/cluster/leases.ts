import { randomBytes } from 'node:crypto';
import { ACQUIRE, RENEW } from './lease-scripts.js';
import { AccountLeases } from './account-leases.js';
import type { ClusterStore } from './store.js';

/** Closes every upstream connection this replica has open for an account; resolves once they are closed. */
export type ConnectionCloser = (account: string) => Promise<void>;

export interface ConnectionLeasesOptions {
  readonly store: ClusterStore;
  /** A lease not renewed this long is free for another replica (cluster.lease_ttl). */
  readonly ttlMs: number;
  /** The local share of a limit while Redis is away (Cluster.share). */
  readonly share: (limit: number) => number;
  /** How long an account goes without a transaction before its connections are closed and its leases given back. */
  readonly idleMs?: number;
}

/**
 * The replicas' connection slots (`server.connections`) as leases in Redis: per account a sorted
 * set of leases scored by expiry. A lease is held for as long as this replica may have one of the
 * account's connections open — not per message — so Redis stays off the per-message path: the
 * leases are renewed together every third of the TTL in one round trip, and given back only after
 * the account has been idle a while and its connections are closed (the closer). A replica that
 * dies stops renewing: its leases expire within the TTL and the others take them.
 *
 * Fair turns: a replica kept busy for good would keep its leases for good, and the others' queues
 * would only grow. A replica that holds none and asks queues up in Redis (first come, first
 * served: a free lease goes to those waiting longest), and a holder whose renewal finds someone
 * waiting gives one lease up per TTL it has held them — its connections closed first.
 *
 * Why polling while every lease is taken, not pub/sub: a dead replica's lease frees by expiring,
 * which Redis announces to nobody, so a waiter would have to poll for those anyway. It asks again
 * after a short backoff (50 ms doubling to 1 s, never later than the earliest expiry), and only
 * while one of its lanes has entries waiting for a connection.
 */
export class ConnectionLeases {
  private readonly accounts = new Map<string, AccountLeases>();
  private readonly acquireScript: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private readonly renewScript: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private closer: ConnectionCloser = async () => undefined;
  /** Lease names: this node, this process (a restarted replica does not renew its predecessor's), a counter. */
  private readonly incarnation = randomBytes(3).toString('hex');
  private sequence = 0;
  private stopped = false;
  readonly idleMs: number;

  constructor(readonly opts: ConnectionLeasesOptions) {
    this.acquireScript = opts.store.script('sendasLeaseAcquire', ACQUIRE, 3);
    this.renewScript = opts.store.script('sendasLeaseRenew', RENEW, 0);
    this.idleMs = opts.idleMs ?? Math.min(5_000, Math.max(100, Math.floor(opts.ttlMs / 3)));
    opts.store.onHealth((up) => {
      // back from an outage: the leases are checked (kept, taken again or lost) before a lane grows past its share
      for (const a of this.accounts.values()) {
        if (up) a.stale = true;
        a.changed();
      }
      if (up) void this.renew();
    });
  }

  /** What closes an account's connections before its leases are given back (the transport's, in both threads). */
  closeConnectionsWith(closer: ConnectionCloser): void {
    this.closer = closer;
  }

  /** The leases of one account (upstream account key). */
  of(account: string): AccountLeases {
    let a = this.accounts.get(account);
    if (!a) this.accounts.set(account, (a = new AccountLeases(account, this)));
    return a;
  }

  /** Renews every third of the TTL. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.renew(), Math.max(100, Math.floor(this.opts.ttlMs / 3)));
    this.timer.unref();
  }

  /** Renews every lease this replica holds, in one round trip; a lease found lost is dropped (the lane asks again). */
  renew(): Promise<void> {
    this.renewing ??= this.doRenew().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  /** A clean stop (after the last delivery, the pools closed): every lease given back. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.all([...this.accounts.values()].map((a) => a.stop()));
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** @internal a new lease name */
  nextMember(): string {
    return `${this.opts.store.nodeId}#${this.incarnation}.${++this.sequence}`;
  }

  /** @internal takes one lease if fewer than `limit` are held: true, or when the earliest expires (shared clock); undefined while Redis is away */
  async acquire(account: string, member: string, limit: number, held: number): Promise<true | { earliest: number } | undefined> {
    const { store, ttlMs } = this.opts;
    const now = store.now();
    const r = await store.run(() => this.acquireScript([this.key(account), this.queueKey(account), this.wishKey(account)], [now, ttlMs, limit, member, store.nodeId, held]));
    if (!Array.isArray(r)) return undefined;
    return Number(r[0]) === 1 ? true : { earliest: Number(r[1]) };
  }

  /** @internal gives leases back */
  async release(account: string, members: readonly string[]): Promise<void> {
    if (members.length === 0) return;
    await this.opts.store.run((redis) => redis.zrem(this.key(account), ...members));
  }

  /** @internal closes the account's connections (see closeConnectionsWith) */
  close(account: string): Promise<void> {
    return this.closer(account);
  }

  /** The local clock, for timers. */
  localNow(): number {
    return Date.now();
  }

  private key(account: string): string {
    return this.opts.store.key('lease', account);
  }

  private queueKey(account: string): string {
    return this.opts.store.key('lease-queue', account);
  }

  private wishKey(account: string): string {
    return this.opts.store.key('lease-asked', account);
  }

  private async doRenew(): Promise<void> {
    const { store, ttlMs } = this.opts;
    const held = [...this.accounts.values()].filter((a) => a.members.length > 0);
    const sent = held.map((a) => [...a.members]);
    if (held.length === 0) {
      if (store.up) for (const a of this.accounts.values()) a.verified();
      return;
    }
    const args: (string | number)[] = [store.now(), ttlMs, store.nodeId, held.length];
    for (let i = 0; i < held.length; i++) args.push(this.key(held[i]!.account), this.wishKey(held[i]!.account), held[i]!.limitInRedis, sent[i]!.length, ...sent[i]!);
    const r = await store.run(() => this.renewScript([], args));
    if (!Array.isArray(r)) return; // Redis away: the share applies; checked again when it is back
    held.forEach((a, i) => {
      const [waiting, ...kept] = (r[i] as unknown[]) ?? [0];
      a.renewed(sent[i]!, new Set(kept.map(String)), Number(waiting));
    });
    for (const a of this.accounts.values()) a.verified();
  }
}
