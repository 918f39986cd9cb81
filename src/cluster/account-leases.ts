import type { ConnectionLeases } from './leases.js';

/** The first wait before asking again when every lease of an account is taken; doubles up to the most. */
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 1_000;

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
