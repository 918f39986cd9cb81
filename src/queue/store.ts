import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { QueueEntryMeta } from './entry.js';
import { DirSync } from './dir-sync.js';

export type QueueArea = 'active' | 'failed';

/**
 * The queue on disk. Each entry is two files in an area directory: ID.eml (the message as it
 * will leave, headers already aligned) and ID.json (its metadata). Both are written in tmp/,
 * fsync'd, and renamed into place message first, metadata last; then the directory is fsync'd.
 * An entry exists once its .json is in active/: a crash before that leaves only tmp/ litter,
 * which is removed at start. So a 250 is only ever sent for an entry that survives kill -9 or a
 * power cut.
 */
export class QueueStore {
  readonly dir: string;
  private readonly syncs: Record<QueueArea, DirSync>;

  constructor(dir: string) {
    this.dir = dir;
    this.syncs = { active: new DirSync(this.areaDir('active')), failed: new DirSync(this.areaDir('failed')) };
  }

  areaDir(area: QueueArea | 'tmp' | 'requests'): string {
    return join(this.dir, area);
  }

  async init(): Promise<void> {
    for (const area of ['active', 'failed', 'tmp', 'requests'] as const) await mkdir(this.areaDir(area), { recursive: true });
    // half-written entries of a relay that died while accepting: the client never got a 250
    for (const name of await readdir(this.areaDir('tmp'))) await rm(join(this.areaDir('tmp'), name), { force: true });
    await this.repairMoves('active', 'failed');
    await this.repairMoves('failed', 'active');
    // a message file without metadata in active/ was never acknowledged: the client got no 250
    const active = await readdir(this.areaDir('active'));
    const metas = new Set(active.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)));
    for (const name of active) {
      if (name.endsWith('.eml') && !metas.has(name.slice(0, -4))) await rm(join(this.areaDir('active'), name), { force: true });
    }
  }

  /**
   * Finishes or undoes a move between areas that a crash interrupted. A move renames the
   * message, then writes the metadata, then deletes the old metadata; so metadata without its
   * message in `from` means the message already went to `to`. If `to` has the complete entry,
   * the move finished but for the delete; otherwise the message is brought back and the entry
   * stays where its metadata is (it is looked at again, e.g. re-attempted).
   */
  private async repairMoves(from: QueueArea, to: QueueArea): Promise<void> {
    const names = new Set(await readdir(this.areaDir(from)));
    const other = new Set(await readdir(this.areaDir(to)));
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const id = name.slice(0, -5);
      if (names.has(`${id}.eml`) || !other.has(`${id}.eml`)) continue;
      if (other.has(`${id}.json`)) await rm(join(this.areaDir(from), name), { force: true });
      else await rename(join(this.areaDir(to), `${id}.eml`), join(this.areaDir(from), `${id}.eml`));
    }
    await this.syncs[from].sync();
    await this.syncs[to].sync();
  }

  /**
   * Writes the message and then its metadata durably; `makeMeta` gets the message's size.
   * Resolves with the metadata only when both are on disk.
   */
  async accept(id: string, message: Readable, makeMeta: (size: number) => QueueEntryMeta): Promise<QueueEntryMeta> {
    const tmpMessage = join(this.areaDir('tmp'), `${id}.eml`);
    try {
      let size = 0;
      await writeDurably(tmpMessage, async (fh) => {
        await pipeline(
          message,
          async function* (source: AsyncIterable<Buffer>) {
            for await (const chunk of source) {
              size += chunk.length;
              yield chunk;
            }
          },
          fileSink(fh),
        );
      });
      const meta = makeMeta(size);
      await this.writeMeta(meta, 'active', { messageFrom: tmpMessage });
      return meta;
    } catch (err) {
      await rm(tmpMessage, { force: true });
      throw err;
    }
  }

  /** Replaces an entry's metadata atomically (write, fsync, rename, fsync the directory). */
  async update(meta: QueueEntryMeta, area: QueueArea = 'active'): Promise<void> {
    await this.writeMeta(meta, area);
  }

  private async writeMeta(meta: QueueEntryMeta, area: QueueArea, opts: { messageFrom?: string } = {}): Promise<void> {
    const tmpMeta = join(this.areaDir('tmp'), `${meta.id}.${randomBytes(4).toString('hex')}.json`);
    try {
      await writeDurably(tmpMeta, (fh) => fh.writeFile(`${JSON.stringify(meta, null, 2)}\n`));
      if (opts.messageFrom) await rename(opts.messageFrom, this.path(meta.id, 'eml', area));
      await rename(tmpMeta, this.path(meta.id, 'json', area));
    } catch (err) {
      await rm(tmpMeta, { force: true });
      throw err;
    }
    await this.syncs[area].sync();
  }

  /** Moves an entry to the failed area, kept for inspection. */
  async moveToFailed(meta: QueueEntryMeta): Promise<void> {
    await this.writeMeta(meta, 'failed', { messageFrom: this.path(meta.id, 'eml', 'active') });
    await rm(this.path(meta.id, 'json', 'active'), { force: true });
    await this.syncs.active.sync();
  }

  /** Puts a failed entry back into the active queue (sendas queue retry). */
  async moveToActive(meta: QueueEntryMeta): Promise<void> {
    await this.writeMeta(meta, 'active', { messageFrom: this.path(meta.id, 'eml', 'failed') });
    await rm(this.path(meta.id, 'json', 'failed'), { force: true });
    await this.syncs.failed.sync();
  }

  /**
   * Removes an entry: delivered, or deleted by ops. Metadata first, so a crash never leaves an
   * entry without its message. No directory fsync: if a crash undoes the unlink, the entry is
   * delivered again (the duplicate window), nothing is lost — and delivery stays one fsync cheaper.
   */
  async remove(id: string, area: QueueArea = 'active'): Promise<void> {
    await unlinkIfPresent(this.path(id, 'json', area));
    await unlinkIfPresent(this.path(id, 'eml', area));
  }

  async read(id: string, area: QueueArea = 'active'): Promise<QueueEntryMeta | undefined> {
    try {
      return JSON.parse(await readFile(this.path(id, 'json', area), 'utf8')) as QueueEntryMeta;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async list(area: QueueArea = 'active'): Promise<QueueEntryMeta[]> {
    let names: string[];
    try {
      names = await readdir(this.areaDir(area));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const metas: QueueEntryMeta[] = [];
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      const meta = await this.read(name.slice(0, -5), area);
      if (meta) metas.push(meta);
    }
    return metas.sort((a, b) => a.receivedAt.localeCompare(b.receivedAt));
  }

  messageStream(id: string, area: QueueArea = 'active'): Readable {
    return createReadStream(this.path(id, 'eml', area));
  }

  /** The message's header section (at most 1 MB), for failure notices. */
  async headerSection(id: string, area: QueueArea = 'active'): Promise<Buffer> {
    const fh = await open(this.path(id, 'eml', area), 'r');
    try {
      const { buffer, bytesRead } = await fh.read({ buffer: Buffer.alloc(1024 * 1024), position: 0 });
      const head = buffer.subarray(0, bytesRead);
      const end = head.indexOf('\r\n\r\n');
      return end >= 0 ? head.subarray(0, end + 2) : head;
    } finally {
      await fh.close();
    }
  }

  path(id: string, kind: 'eml' | 'json', area: QueueArea): string {
    if (!isQueueId(id)) throw new Error(`not a queue id: ${JSON.stringify(id)}`);
    return join(this.areaDir(area), `${id}.${kind}`);
  }
}

/** A Writable into an open file that leaves closing to the caller (who fsyncs first). */
function fileSink(fh: FileHandle): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      fh.write(chunk).then(() => done(), done);
    },
    writev(chunks, done) {
      fh.writev(chunks.map((c) => c.chunk as Buffer)).then(() => done(), done);
    },
  });
}

async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export function isQueueId(id: string): boolean {
  return /^[A-Z0-9]{6,32}$/.test(id);
}

async function writeDurably(path: string, write: (fh: FileHandle) => Promise<void>): Promise<void> {
  const fh = await open(path, 'wx', 0o600);
  try {
    await write(fh);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
