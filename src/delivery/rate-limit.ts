import type { RateConfig } from '../config/types.js';

/**
 * A per-account sliding window: at most `count` sends in any `windowMs`. Sends wait for a free
 * slot; they never fail for it.
 */
export class RateWindow {
  private readonly sent: number[] = [];

  constructor(private readonly rate: RateConfig) {}

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
  async acquire(clock: () => number = Date.now): Promise<void> {
    for (;;) {
      const wait = this.waitMs(clock());
      if (wait <= 0) {
        this.record(clock());
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, wait).unref());
    }
  }

  private prune(now: number): void {
    while (this.sent.length > 0 && this.sent[0]! <= now - this.rate.windowMs) this.sent.shift();
  }
}
