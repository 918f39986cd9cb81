import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import type { QueueEntryMeta } from './entry.js';
import { isQueueId, type QueueStore } from './store.js';

/** What the running relay must be told about, so its in-memory schedule matches the files. */
export interface QueueScheduler {
  retryNow(meta: QueueEntryMeta): void;
  /** false: an attempt is running; the entry is removed when it ends. */
  forget(id: string): boolean;
}

export type QueueRequest = { op: 'retry'; id: string } | { op: 'retry-all' } | { op: 'delete'; id: string };
export interface QueueResponse {
  ok: boolean;
  message: string;
}

/**
 * The operations behind `sendas queue retry|delete`. The relay runs them itself when asked
 * through the request directory (so a running attempt and the command never write the same
 * entry at once); the CLI runs them directly on the files when no relay holds the queue.
 */
export async function runQueueRequest(store: QueueStore, req: QueueRequest, scheduler?: QueueScheduler): Promise<QueueResponse> {
  if (req.op !== 'retry-all' && !isQueueId(req.id)) {
    return { ok: false, message: `"${req.id}" is not a queue id (12 characters such as 55EWMLCJ78Q4; see sendas queue list)` };
  }
  if (req.op === 'retry-all') {
    const metas = await store.list('active');
    for (const meta of metas) {
      meta.nextAttemptAt = undefined;
      await store.update(meta);
      scheduler?.retryNow(meta);
    }
    return { ok: true, message: `${metas.length} queued message${metas.length === 1 ? '' : 's'} will be tried now` };
  }
  if (req.op === 'retry') {
    const active = await store.read(req.id, 'active');
    if (active) {
      active.nextAttemptAt = undefined;
      await store.update(active);
      scheduler?.retryNow(active);
      return { ok: true, message: `${req.id} will be tried now` };
    }
    const failed = await store.read(req.id, 'failed');
    if (!failed) return { ok: false, message: `no message ${req.id} in the queue` };
    // back into the queue: failed recipients are tried again, delivered ones are not, and max_age starts over
    let again = 0;
    for (const r of failed.recipients) {
      if (r.status === 'failed') {
        r.status = 'pending';
        again++;
      }
    }
    failed.requeuedAt = new Date().toISOString();
    // a new round: the retry schedule starts from its first wait again (recipients keep their counts)
    failed.attempts = 0;
    failed.failedAt = undefined;
    failed.nextAttemptAt = undefined;
    await store.moveToActive(failed);
    scheduler?.retryNow(failed);
    return { ok: true, message: `${req.id} is back in the queue for ${again} recipient${again === 1 ? '' : 's'} and will be tried now` };
  }
  const area = (await store.read(req.id, 'active')) ? 'active' : (await store.read(req.id, 'failed')) ? 'failed' : undefined;
  if (!area) return { ok: false, message: `no message ${req.id} in the queue` };
  if (area === 'active' && scheduler && !scheduler.forget(req.id)) {
    return { ok: true, message: `${req.id} is being delivered right now; it will be deleted when this attempt ends` };
  }
  await store.remove(req.id, area);
  return { ok: true, message: `${req.id} deleted${area === 'failed' ? ' from the failed area' : ''}` };
}

/** The relay's side: holds the queue's pid file and answers requests dropped into requests/. */
export class QueueControl {
  private watcher: FSWatcher | undefined;
  private busy: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: QueueStore,
    private readonly scheduler: QueueScheduler,
    private readonly logger: Logger,
  ) {}

  get pidFile(): string {
    return join(this.store.dir, 'sendas.pid');
  }

  async start(): Promise<void> {
    const holder = await queueHolder(this.store.dir);
    if (holder !== undefined && holder !== process.pid) {
      throw new Error(`queue directory ${this.store.dir} is in use by another sendas (pid ${holder}); two relays on one queue would send messages twice`);
    }
    await writeFile(this.pidFile, `${process.pid}\n`);
    const dir = this.store.areaDir('requests');
    this.watcher = watch(dir, () => this.drainRequests());
    this.drainRequests();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    await this.busy;
    await rm(this.pidFile, { force: true });
  }

  private drainRequests(): void {
    this.busy = this.busy.then(async () => {
      const dir = this.store.areaDir('requests');
      for (const name of (await readdir(dir)).filter((n) => n.endsWith('.req.json')).sort()) {
        const file = join(dir, name);
        let response: QueueResponse;
        try {
          const req = JSON.parse(await readFile(file, 'utf8')) as QueueRequest;
          response = await runQueueRequest(this.store, req, this.scheduler);
          this.logger.info({ request: req, ok: response.ok }, `queue command: ${response.message}`);
        } catch (err) {
          response = { ok: false, message: `could not carry out the request: ${(err as Error).message}` };
        }
        const base = file.slice(0, -'.req.json'.length);
        await writeFile(`${base}.tmp`, JSON.stringify(response));
        await rename(`${base}.tmp`, `${base}.res.json`);
        await rm(file, { force: true });
      }
    }, () => undefined);
  }
}

/** The pid of the live relay holding the queue, if any. */
export async function queueHolder(dir: string): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number((await readFile(join(dir, 'sendas.pid'), 'utf8')).trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    // EPERM: alive, owned by someone else
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}
