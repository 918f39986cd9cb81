import type { Cluster } from '../cluster/cluster.js';
import { SharedWindows } from '../cluster/rate.js';
import type { RateConfig } from '../config/types.js';
import { systemClock, type Clock } from './clock.js';
import { RateWindow } from './rate-limit.js';

/**
 * The upstream counts a send when it arrives, sendas when it starts: connect, TLS and AUTH take
 * longer for one send than another, so two sends started a window apart can arrive closer. The
 * shared window is this much longer than the configured one (2%, at most a second: 20/min is
 * counted over 61 s) so the upstream's count stays within the limit too.
 */
export function arrivalMarginMs(windowMs: number): number {
  return Math.min(1_000, Math.ceil(windowMs * 0.02));
}

const windowsOf = new WeakMap<Cluster, SharedWindows>();

/**
 * An account's rate shared by every replica (`cluster:`): each send takes a slot in one window in
 * Redis (one round trip per send). While Redis is away the replica keeps to its own share of the
 * rate in a local window (the count divided by the replicas last seen, at least 1), which also
 * counts the sends it made through Redis, so an outage does not start from an empty window.
 */
export class SharedRate {
  private readonly windows: SharedWindows;
  private local: RateWindow;

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

  /** Waits for a slot and takes it: in Redis while it answers, else in the local share. */
  async acquire(clock: Clock = systemClock): Promise<void> {
    const { count, windowMs } = this.rate;
    for (;;) {
      const wait = await this.windows.tryTake(this.account, count, windowMs + arrivalMarginMs(windowMs), this.cluster.store.now());
      if (wait === 0) {
        this.localShare().record(clock.now());
        return;
      }
      const ms = wait ?? this.localShare().waitMs(clock.now());
      if (ms <= 0) {
        this.localShare().record(clock.now());
        return;
      }
      await new Promise<void>((resolve) => clock.setTimer(resolve, ms));
    }
  }

  /** The local window at the share for the replicas seen now (the sends so far kept). */
  private localShare(): RateWindow {
    const share = this.cluster.share(this.rate.count);
    if (share !== this.local.rate.count) this.local = this.local.resized(share);
    return this.local;
  }
}
