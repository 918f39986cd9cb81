import { randomBytes } from 'node:crypto';
import { ACQUIRE, RENEW } from './lease-scripts.js';
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

/** The first wait before asking again when every lease of an account is taken; doubles up to the most. */
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 1_000;

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

/**
 * One account's leases on this replica: how many transactions (and so connections) it may have at
 * once, a lease asked for when its lane is full and waiting, and given back when it is idle.
 */
export class AccountLeases {
  /** The leases this replica holds. */
  members: string[] = [];
  /** Redis came back: the leases are not checked yet, the local share applies until they are. */
  stale = false;
  /** The account's `connections` when its leases were last asked for (the limit the scripts check). */
  limitInRedis = 1;
  private users = 0;
  /** A transaction ran since the connections were last closed: some may be open. */
  private used = false;
  private acquiring = false;
  private nextTryAt = 0;
  private retryMs = RETRY_MIN_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private releasing: Promise<void> | undefined;
  /** Giving one lease to a replica that waits with none: the lane runs one fewer until it is closed and back. */
  private yielding: Promise<void> | 'waiting' | undefined;
  /** Since when (shared clock) the leases have been held without giving one up. */
  private heldSince = 0;
  /** What limit() allowed last: less now means connections must close. */
  private allowedBefore = 0;
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly account: string,
    private readonly book: ConnectionLeases,
  ) {}

  get held(): number {
    return this.members.length;
  }

  /**
   * Transactions the account may run at once on this replica: `wanted` (its connections, fewer
   * while it backs off) capped by the leases held; while Redis is away (or its leases are not
   * checked yet since it came back) the local share. When all held leases are in use and fewer
   * than wanted, one more is asked for; a grant calls the listeners (onChange).
   */
  limit(connections: number, wanted: number, running: number): number {
    this.limitInRedis = connections;
    if (this.releasing || this.book.isStopped) return 0;
    const { store } = this.book.opts;
    if (!store.up || this.stale) return Math.min(wanted, this.book.opts.share(connections));
    if (this.yielding) return Math.min(wanted, this.held - 1);
    if (running >= this.held && this.held < wanted) this.acquire(connections);
    return Math.min(wanted, this.held);
  }

  /** Called when the account may run more (a lease granted, Redis gone or back, leases given back). */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A transaction of the account begins (the lane's attempt, a passthrough message). */
  enter(): void {
    this.users++;
    this.used = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  /** It ended; after idleMs without another one, the connections close and the leases go back. */
  exit(): void {
    this.users = Math.max(0, this.users - 1);
    if (this.yielding === 'waiting') this.yieldOne();
    this.armIdle();
  }

  /** @internal the renewal's answer for the members it sent */
  renewed(sent: readonly string[], kept: ReadonlySet<string>, waiting: number): void {
    const lost = sent.filter((m) => !kept.has(m));
    if (lost.length > 0) {
      this.members = this.members.filter((m) => !lost.includes(m));
      this.changed();
    }
    // fairness: a replica busy for good would keep its leases for good; while another waits with
    // none, each lease held a whole TTL is given up in turn (a reconnect per TTL is the cost)
    if (waiting > 0 && this.held > 0 && !this.yielding && !this.releasing && this.book.opts.store.now() - this.heldSince >= this.book.opts.ttlMs) {
      this.yielding = 'waiting';
      this.changed();
      this.yieldOne();
    }
  }

  /** @internal the leases are checked since Redis came back */
  verified(): void {
    if (!this.stale) return;
    this.stale = false;
    this.changed();
  }

  /** @internal something limit() depends on changed: fewer allowed closes the connections, then the listeners are told */
  changed(): void {
    const { store } = this.book.opts;
    const now = this.releasing ? 0 : !store.up || this.stale ? this.book.opts.share(this.limitInRedis) : this.yielding ? this.held - 1 : this.held;
    // more connections may be open than are allowed now (a lease lost, Redis gone with more held
    // than the share): they close, those in a transaction after it; the lane starts no new one above
    // (a yield closes them itself)
    if (now < this.allowedBefore && !this.releasing && !this.yielding && this.used) void this.closeConnections();
    this.allowedBefore = now;
    for (const l of [...this.listeners]) l();
  }

  private async closeConnections(): Promise<void> {
    try {
      await this.book.close(this.account);
      if (this.users === 0) this.used = false;
    } catch {
      // said by the transport; the next shrink or idle spell tries again
    }
  }

  /** Gives every lease back (a clean stop). */
  async stop(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.releasing;
    if (typeof this.yielding === 'object') await this.yielding;
    const members = this.members;
    this.members = [];
    await this.book.release(this.account, members);
  }

  /** Once the account runs within one lease fewer: its connections closed, then the lease goes back. */
  private yieldOne(): void {
    if (this.yielding !== 'waiting' || this.users > this.held - 1) return;
    this.yielding = (async () => {
      try {
        await this.book.close(this.account);
      } catch {
        return;
      }
      const member = this.members.pop();
      if (member) await this.book.release(this.account, [member]);
      // a replica that just gave one up lets the waiting one take it first (the script gives waiters priority)
    })().finally(() => {
      this.yielding = undefined;
      this.heldSince = this.book.opts.store.now();
      this.allowedBefore = Math.min(this.allowedBefore, this.held);
      this.changed();
      this.armIdle();
    });
  }

  private acquire(connections: number): void {
    if (this.acquiring || this.book.localNow() < this.nextTryAt) return;
    this.acquiring = true;
    const member = this.book.nextMember();
    void this.book.acquire(this.account, member, connections, this.held).then((r) => {
      this.acquiring = false;
      if (r === true) {
        if (this.book.isStopped) return void this.book.release(this.account, [member]);
        if (this.held === 0) this.heldSince = this.book.opts.store.now();
        this.members.push(member);
        this.retryMs = RETRY_MIN_MS;
        this.nextTryAt = 0;
        this.armIdle();
        this.changed(); // the lane may start one more
        return;
      }
      if (r) {
        // every lease is taken: ask again soon, no later than the earliest one expires
        const wait = Math.max(RETRY_MIN_MS, Math.min(this.retryMs, r.earliest - this.book.opts.store.now()));
        // at least every third of the TTL: a waiter's place in the queue lapses when it stops asking
        this.retryMs = Math.min(RETRY_MAX_MS, Math.floor(this.book.opts.ttlMs / 3), this.retryMs * 2);
        this.nextTryAt = this.book.localNow() + wait;
        if (this.retryTimer) clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.changed();
        }, wait);
        this.retryTimer.unref();
        return;
      }
      // r undefined: Redis went away; the share applies (the health listener told the lane)
      this.changed();
    });
  }

  private armIdle(): void {
    if (this.users > 0 || this.held === 0 || this.idleTimer || this.releasing || this.yielding) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.users === 0) this.release();
    }, this.book.idleMs);
    this.idleTimer.unref();
  }

  /** Idle: the connections close first, THEN the leases go back, so another replica never opens one while ours is still open. */
  private release(): void {
    if (this.releasing || this.yielding || this.held === 0) return;
    this.releasing = (async () => {
      try {
        await this.book.close(this.account);
        if (this.users === 0) this.used = false;
      } catch {
        // a pool that would not close stays counted: its leases are kept, renewed, and given back at the next idle spell
        return;
      }
      if (this.users > 0) return; // can't happen while limit() says 0, kept for safety
      const members = this.members;
      this.members = [];
      await this.book.release(this.account, members);
    })().finally(() => {
      this.releasing = undefined;
      this.allowedBefore = 0; // closed just now: nothing to close again
      this.changed();
      this.armIdle();
    });
  }
}
