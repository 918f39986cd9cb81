import type { RateConfig } from '../config/types.js';
import { systemClock, type Clock } from './clock.js';

/**
 * A per-account sliding window: at most `count` sends in any `windowMs`. Sends wait for a free
 * slot; they never fail for it.
 */
export class RateWindow {
  private readonly sent: number[] = [];

  constructor(readonly rate: RateConfig) {}

  /** Milliseconds until a send may start (0 = now). Pure with respect to `now`. */
  waitMs(now: number): number {
    this.prune(now);
    if (this.sent.length < this.rate.count) return 0;
    return this.sent[0]! + this.rate.windowMs - now;
  }

  /** Records a send starting at `now`. */
  record(now: number): void {
    this.prune(now);
    this.sent.push(now);
  }

  /** Waits for a slot and takes it. */
  async acquire(clock: Clock = systemClock): Promise<void> {
    for (;;) {
      const wait = this.waitMs(clock.now());
      if (wait <= 0) {
        this.record(clock.now());
        return;
      }
      await new Promise<void>((resolve) => clock.setTimer(resolve, wait));
    }
  }

  /** The same sends under another count (a replica's share of a shared rate when the replicas change). */
  resized(count: number): RateWindow {
    const w = new RateWindow({ count, windowMs: this.rate.windowMs });
    w.sent.push(...this.sent);
    return w;
  }

  private prune(now: number): void {
    while (this.sent.length > 0 && this.sent[0]! <= now - this.rate.windowMs) this.sent.shift();
  }
}
