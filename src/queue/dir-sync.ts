import { open } from 'node:fs/promises';

/**
 * fsync of a directory, shared between callers: a rename is durable once a directory fsync that
 * *started after* it completes. Callers that arrive while one runs all wait for the single next
 * one, so N clients accepting at once cost about two directory fsyncs, not N.
 */
export class DirSync {
  private running: Promise<void> | undefined;
  private next: Promise<void> | undefined;
  /** How many fsyncs actually ran (for tests and the benchmark). */
  count = 0;

  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    if (this.next) return this.next;
    if (!this.running) return this.start();
    const after = this.running.then(
      () => undefined,
      () => undefined,
    );
    this.next = after.then(() => {
      this.next = undefined;
      return this.start();
    });
    return this.next;
  }

  private start(): Promise<void> {
    const run = this.fsync().finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }

  private async fsync(): Promise<void> {
    this.count++;
    const fh = await open(this.dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}
