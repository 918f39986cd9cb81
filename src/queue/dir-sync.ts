import type { FileHandle } from 'node:fs/promises';
import { fsyncDirHandle, openDirForSync, type DirFsyncDeps } from './dir-fsync.js';

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
  private fd: Promise<FileHandle | undefined> | undefined;
  /** Set once the platform or file system refused a directory fsync: later syncs are no-ops. */
  private unsupported = false;

  constructor(
    private readonly dir: string,
    private readonly deps?: DirFsyncDeps,
  ) {}

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
    if (this.unsupported) return;
    this.count++;
    // the directory stays open: an fsync is then one call to the thread pool, not three (open, fsync, close)
    this.fd ??= openDirForSync(this.dir, this.deps);
    const opened = this.fd;
    try {
      const fh = await opened;
      if (!fh || !(await fsyncDirHandle(fh))) this.unsupported = true;
    } catch (err) {
      if (this.fd === opened) this.fd = undefined;
      void opened.then((fh) => fh?.close()).catch(() => undefined);
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
