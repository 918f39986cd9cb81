import { open, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { isSystemError } from '../errors/local.js';

/** What a probe writes: the journal's largest record, so a disk that takes it takes a small message. */
const PROBE_BYTES = 64 * 1024;

/**
 * Whether the queue can be written, for /readyz: a write that failed with a system error (ENOSPC,
 * EDQUOT, EROFS, ENOTDIR …) makes the queue unwritable until a write succeeds — an accepted
 * message, an entry's new state, or the probe that /readyz makes while it is unwritable, so a
 * relay that gets no traffic while it reports 503 still finds out once space is freed.
 */
export class WriteHealth {
  private failure: { readonly code: string; readonly at: Date } | undefined;
  private probes = 0;

  constructor(private readonly tmpDir: string) {}

  /** Tracks one write: success makes the queue writable again, a system error unwritable. */
  async track<T>(write: Promise<T>): Promise<T> {
    try {
      const result = await write;
      this.failure = undefined;
      return result;
    } catch (err) {
      if (isSystemError(err)) this.failure = { code: err.code, at: new Date() };
      throw err;
    }
  }

  /** Why the queue can't be written now, or undefined. Probes the disk when the last write failed or it is full. */
  async problem(): Promise<string | undefined> {
    const free = await statfs(this.tmpDir).then(
      (s) => s.bavail * s.bsize,
      () => Infinity,
    );
    if (!this.failure && free >= PROBE_BYTES) return undefined;
    if (await this.probe()) return undefined;
    const failure = this.failure ?? { code: 'ENOSPC', at: new Date() };
    const full = failure.code === 'ENOSPC' || failure.code === 'EDQUOT';
    return `the queue can't be written (${failure.code}${full ? ': the disk is full' : ''}) since ${failure.at.toISOString()}`;
  }

  private async probe(): Promise<boolean> {
    const file = join(this.tmpDir, `.probe-${process.pid}-${++this.probes}`);
    try {
      await this.track(
        (async () => {
          const fh = await open(file, 'wx', 0o600);
          try {
            await fh.writeFile(Buffer.alloc(PROBE_BYTES));
            await fh.datasync();
          } finally {
            await fh.close();
          }
        })(),
      );
      return true;
    } catch {
      return false;
    } finally {
      await rm(file, { force: true });
    }
  }
}
