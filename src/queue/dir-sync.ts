import { open, type FileHandle } from 'node:fs/promises';

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
  private fd: Promise<FileHandle> | undefined;

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
    // the directory stays open: an fsync is then one call to the thread pool, not three (open, fsync, close)
    this.fd ??= open(this.dir, 'r');
    const opened = this.fd;
    try {
      await (await opened).sync();
    } catch (err) {
      if (this.fd === opened) this.fd = undefined;
      void opened.then((fh) => fh.close()).catch(() => undefined);
      throw err;
    }
  }

  /** Closes the directory (the queue is no longer used). */
  async close(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd) await (await fd.catch(() => undefined))?.close();
  }
}
