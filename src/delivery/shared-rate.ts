import type { Cluster } from '../cluster/cluster.js';
import { SharedWindows } from '../cluster/rate.js';
import type { RateConfig } from '../config/types.js';
import { systemClock, type Clock } from './clock.js';
import { RateWindow } from './rate-limit.js';

/** A slot taken in the shared window: settle() when the upstream has answered the send. */
export interface RateSlot {
  settle(): void;
}

const NO_SLOT: RateSlot = { settle: () => undefined };

const windowsOf = new WeakMap<Cluster, SharedWindows>();

/**
 * An account's rate shared by every replica (`cluster:`): each send takes a slot in one window in
 * Redis (one round trip per send). While Redis is away the replica keeps to its own share of the
 * rate in a local window (the count divided by the replicas last seen, at least 1), which also
 * counts the sends it made through Redis, so an outage does not start from an empty window; the
 * sends it made alone go into the shared window when Redis is back, so the others count them too.
 * Times are the shared clock (`cluster.store.now()`); the delivery clock only waits.
 */
export class SharedRate {
  private readonly windows: SharedWindows;
  private local: RateWindow;
  /** Start times of the sends made while Redis was away, not yet in the shared window. */
  private away: number[] = [];

  constructor(
    readonly rate: RateConfig,
    private readonly account: string,
    private readonly cluster: Cluster,
  ) {
    let windows = windowsOf.get(cluster);
    if (!windows) windowsOf.set(cluster, (windows = new SharedWindows(cluster)));
    this.windows = windows;
    this.local = new RateWindow({ count: cluster.share(rate.count), windowMs: rate.windowMs });
  }

  /**
   * Waits for a slot and takes it: in Redis while it answers, else in the local share. The slot's
   * settle() says the upstream answered (cluster/rate.ts: a send counts until a window after that).
   */
  async acquire(clock: Clock = systemClock): Promise<RateSlot> {
    const { count, windowMs } = this.rate;
    const store = this.cluster.store;
    for (;;) {
      if (this.away.length > 0 && this.cluster.up) {
        // taken off first: sends acquiring at the same time must not put them in twice
        const now = store.now();
        const recent = this.away.filter((at) => at > now - windowMs);
        this.away = [];
        if (!(await this.windows.add(this.account, recent, windowMs, now))) this.away = [...recent, ...this.away];
      }
      const now = store.now();
      const wait = await this.windows.tryTake(this.account, count, windowMs, now);
      if (typeof wait === 'object') {
        this.localShare().record(now);
        return { settle: () => this.windows.settle(this.account, wait.member, store.now()) };
      }
      if (wait === undefined) {
        const ms = this.localShare().waitMs(now);
        if (ms <= 0) {
          this.localShare().record(now);
          this.away.push(now);
          while (this.away[0]! <= now - windowMs) this.away.shift();
          return NO_SLOT;
        }
        await new Promise<void>((resolve) => clock.setTimer(resolve, ms));
        continue;
      }
      // Redis' wait counts from `now`, when it was asked: the time its answer took is already gone
      const ms = wait - (store.now() - now);
      if (ms > 0) await new Promise<void>((resolve) => clock.setTimer(resolve, ms));
    }
  }

  /** The local window at the share for the replicas seen now (the sends so far kept). */
  private localShare(): RateWindow {
    const share = this.cluster.share(this.rate.count);
    if (share !== this.local.rate.count) this.local = this.local.resized(share);
    return this.local;
  }
}
