/**
 * Posts to a thread in batches: what is queued during one turn of the event loop goes as one
 * array, in one postMessage, when the turn's I/O callbacks are done (setImmediate).
 *
 * Why: in the benchmark (queue mode, ~1,000 messages/s) postMessage was the main thread's
 * second-largest cost (9% of its time, ~75 µs a call on this VM: the structured clone plus a
 * wake-up of the other thread through the kernel). Requests made in the same turn — the
 * accepts and deliveries of several sessions whose data arrived together — now share one.
 */
export class PostBatch<T> {
  private pending: T[] = [];
  private scheduled = false;

  constructor(private readonly post: (batch: T[]) => void) {}

  push(message: T): void {
    this.pending.push(message);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Forgets what is queued (its thread died: the callers have been answered with an error). */
  clear(): void {
    this.pending = [];
  }

  /** Posts what is queued now (a thread being closed gets what was asked before). */
  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.post(batch);
  }
}
