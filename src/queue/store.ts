import { existsSync } from 'node:fs';
import { close as closeCb, createReadStream, fsync as fsyncCb, open as openCb, read as readCb, fstat as fstatCb, unlink as unlinkCb } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { QueueEntryMeta } from './entry.js';
import { DirSync } from './dir-sync.js';
import { fileWorker } from './file-worker.js';
import { writeAll } from './file-write.js';
import { Journal } from './journal.js';
import { WriteHealth } from './write-health.js';

// file descriptors rather than FileHandles where a file is written or read in pieces (a large
// message, a footer): writev and positioned reads on the descriptor, no handle object to close
const fsOpen = promisify(openCb);
const fsFsync = promisify(fsyncCb);
const fsClose = promisify(closeCb);
const fsUnlink = promisify(unlinkCb);
const fsFstat = promisify(fstatCb);

export type QueueArea = 'active' | 'failed';

/**
 * The queue on disk, in two forms.
 *
 * A small message (up to 64 KiB, the usual case) is appended with its metadata to the journal
 * (journal.ts): the entries accepted meanwhile share one append and one fdatasync, and no 250 is
 * sent before it. It stays there only until its first attempt concludes: delivered, it is marked
 * done; deferred or failed, it is given a file of its own first (extract()).
 *
 * A file of its own is ID.eml in an area directory (active/ or failed/): the message as it will
 * leave (headers already aligned), followed by its metadata (JSON) and a fixed-size footer giving
 * the JSON's length. A large message is written that way at acceptance — in tmp/, fsync'd, renamed
 * into active/, the directory fsync'd before the 250. Later states (attempts, per-recipient
 * results, failure) go to ID.json beside it, written by rename, which supersedes the footer's
 * metadata. Such an entry exists while its .eml does: a crash while accepting leaves only tmp/
 * litter, removed at start. Either way a 250 is only ever sent for an entry that survives kill -9
 * or a power cut. Entries written by older versions (one file per small message; a bare message
 * in ID.eml with its metadata in ID.json) are read the same way.
 */
export class QueueStore {
  readonly dir: string;
  private readonly syncs: Record<QueueArea, DirSync>;
  /** Entries known to have no ID.json (accepted here, never updated): removing them is one unlink. */
  private readonly footerOnly = new Set<string>();
  /** Small messages just accepted, kept for their first delivery attempt: see messageStream(). */
  private readonly recent = new RecentMessages(RECENT_BYTES);
  /** Small entries until their first attempt concludes (journal.ts). */
  private readonly journal: Journal;
  /** Per entry, the end of the operations queued on it (see exclusive). */
  private readonly busy = new Map<string, Promise<unknown>>();
  /** Whether the last write went through: /readyz. */
  readonly health: WriteHealth;
  /** The ids in the failed area, as this store saw it from init() on: its size for /status. */
  private readonly failedIds = new Set<string>();

  constructor(dir: string, options: { journalSegmentBytes?: number } = {}) {
    this.dir = dir;
    this.syncs = { active: new DirSync(this.areaDir('active')), failed: new DirSync(this.areaDir('failed')) };
    this.journal = new Journal(this.areaDir('journal'), options.journalSegmentBytes);
    this.journal.crowded = (ids) => this.evict(ids);
    this.health = new WriteHealth(this.areaDir('tmp'));
  }

  /** Runs the operations on one entry one after the other: a journaled entry may be moved out of the journal while the queue runner updates or removes it. */
  private exclusive<T>(id: string, operation: () => Promise<T>): Promise<T> {
    const before = this.busy.get(id);
    const result = before ? before.then(operation, operation) : operation();
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    this.busy.set(id, settled);
    void settled.then(() => {
      if (this.busy.get(id) === settled) this.busy.delete(id);
    });
    return result;
  }

  /** Gives the entries of a crowded journal segment files of their own (see Journal.crowded); one that fails stays in the journal. */
  private async evict(ids: string[]): Promise<void> {
    for (const id of ids) {
      await this.exclusive(id, async () => {
        if (!this.journal.has(id)) return;
        const meta = await this.journal.meta(id);
        if (meta) await this.extract(meta, 'active');
      }).catch(() => undefined);
    }
  }

  areaDir(area: QueueArea | 'tmp' | 'requests' | 'journal'): string {
    return join(this.dir, area);
  }

  async init(): Promise<void> {
    for (const area of ['active', 'failed', 'tmp', 'requests', 'journal'] as const) await mkdir(this.areaDir(area), { recursive: true });
    // an earlier store of this process (a relay restarted in place) may still hold a segment open
    await this.journal.close();
    // half-written entries of a relay that died while accepting: the client never got a 250
    for (const name of await readdir(this.areaDir('tmp'))) await rm(join(this.areaDir('tmp'), name), { force: true });
    for (const area of ['active', 'failed'] as const) {
      const names = new Set(await readdir(this.areaDir(area)));
      for (const name of names) {
        const id = name.slice(0, -5);
        // metadata without its message: a move or a removal interrupted after the message left
        // (moves write the destination's metadata first, so the entry is whole where its .eml is)
        if (name.endsWith('.json') && !names.has(`${id}.eml`)) await rm(join(this.areaDir(area), name), { force: true });
      }
      for (const name of names) {
        const id = name.slice(0, -4);
        if (!name.endsWith('.eml') || names.has(`${id}.json`)) continue;
        // a bare message without metadata: accepted by an older sendas that died before writing its .json (no 250 was sent)
        if (!(await this.readFooter(id, area))) await rm(join(this.areaDir(area), name), { force: true });
      }
      if (area === 'failed') for (const name of await readdir(this.areaDir(area))) if (name.endsWith('.eml')) this.failedIds.add(name.slice(0, -4));
      await this.syncs[area].sync();
    }
    await this.journal.load((id) => this.hasOwnFile(id), true);
  }

  /** Whether an entry exists as a file of its own (in either area), which outranks its journal record. */
  private hasOwnFile(id: string): boolean {
    return existsSync(this.path(id, 'eml', 'active')) || existsSync(this.path(id, 'eml', 'failed'));
  }

  /** Whether an active entry is (still) in the journal; a store that was not init()ed reads the journal first. */
  private async journaled(id: string, area: QueueArea): Promise<boolean> {
    if (area !== 'active') return false;
    await this.journal.ensureLoaded((x) => this.hasOwnFile(x));
    return this.journal.has(id);
  }

  /** Lets go of the open directories (the relay stops). */
  async close(): Promise<void> {
    await Promise.all([this.syncs.active.close(), this.syncs.failed.close(), this.journal.close()]);
  }

  /**
   * Writes the message with its metadata durably; `makeMeta` gets the message's size. Resolves
   * with the metadata only when the entry is on disk.
   */
  accept(id: string, message: Readable, makeMeta: (size: number) => QueueEntryMeta): Promise<QueueEntryMeta> {
    return this.health.track(this.write(id, message, makeMeta));
  }

  private async write(id: string, message: Readable, makeMeta: (size: number) => QueueEntryMeta): Promise<QueueEntryMeta> {
    const tmp = join(this.areaDir('tmp'), `${id}.eml`);
    let fd: number | undefined;
    let size = 0;
    // A message of up to 64 KiB is gathered in memory and appended with its metadata to the
    // journal (journal.ts) by the queue's file worker (file-worker.ts), off the main thread, with
    // one fdatasync for every entry accepted meanwhile. A larger one is written to a file of its
    // own as it arrives, in 64 KiB writes, then fsync'd, closed, renamed and the directory fsync'd.
    const pending: Buffer[] = [];
    let pendingBytes = 0;
    try {
      for await (const chunk of message as AsyncIterable<Buffer>) {
        size += chunk.length;
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= WRITE_CHUNK) {
          fd ??= await fsOpen(tmp, 'wx', 0o600);
          await writeAll(fd, pending.splice(0));
          pendingBytes = 0;
        }
      }
      const meta = makeMeta(size);
      const json = Buffer.from(JSON.stringify(meta));
      if (fd === undefined) {
        this.recent.add(id, [await this.journal.append(id, json, pending, size)], size);
        return meta;
      }
      pending.push(json, footer(json.length));
      await writeAll(fd, pending);
      await fsFsync(fd);
      const closing = fsClose(fd);
      fd = undefined;
      await Promise.all([closing, rename(tmp, this.path(id, 'eml', 'active'))]);
      await this.syncs.active.sync();
      this.footerOnly.add(key(id, 'active'));
      return meta;
    } catch (err) {
      if (fd !== undefined) await fsClose(fd).catch(() => undefined);
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** Replaces an entry's metadata atomically (write, fsync, rename, fsync the directory). */
  async update(meta: QueueEntryMeta, area: QueueArea = 'active'): Promise<void> {
    await this.health.track(
      this.exclusive(meta.id, async () => {
        if (await this.journaled(meta.id, area)) await this.extract(meta, area);
        else await this.writeMeta(meta, area);
      }),
    );
  }

  /**
   * Gives a journaled entry a file of its own, with `meta` in its footer, in `area`: its state
   * changed (a retry is due, it failed), so it leaves the journal, whose segments live only as
   * long as their entries' first attempts. The file is durable before the done mark is written.
   */
  private async extract(meta: QueueEntryMeta, area: QueueArea): Promise<void> {
    const message = await this.journal.message(meta.id);
    if (!message) throw new Error(`queue entry ${meta.id} is not in the journal`);
    const json = Buffer.from(JSON.stringify(meta));
    const tmp = join(this.areaDir('tmp'), `${meta.id}.${++tmpCounter}.eml`);
    await fileWorker.writeEntry(tmp, this.path(meta.id, 'eml', area), [message, json, footer(json.length)]);
    this.footerOnly.add(key(meta.id, area));
    await this.journal.done(meta.id, true);
  }

  private async writeMeta(meta: QueueEntryMeta, area: QueueArea): Promise<void> {
    const tmpMeta = join(this.areaDir('tmp'), `${meta.id}.${++tmpCounter}.json`);
    try {
      const fh = await open(tmpMeta, 'wx', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(meta, null, 2)}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmpMeta, this.path(meta.id, 'json', area));
    } catch (err) {
      await rm(tmpMeta, { force: true });
      throw err;
    }
    this.footerOnly.delete(key(meta.id, area));
    await this.syncs[area].sync();
  }

  /** Moves an entry to the failed area, kept for inspection. */
  async moveToFailed(meta: QueueEntryMeta): Promise<void> {
    await this.health.track(this.move(meta, 'active', 'failed'));
  }

  /** Puts a failed entry back into the active queue (sendas queue retry). */
  async moveToActive(meta: QueueEntryMeta): Promise<void> {
    await this.move(meta, 'failed', 'active');
  }

  /**
   * The destination's metadata first, then the message, then the old metadata: at any crash the
   * entry is whole in the area that has its .eml, and init() drops metadata left without one.
   */
  private async move(meta: QueueEntryMeta, from: QueueArea, to: QueueArea): Promise<void> {
    this.recent.delete(meta.id);
    await this.exclusive(meta.id, async () => {
      if (await this.journaled(meta.id, from)) return this.extract(meta, to);
      await this.writeMeta(meta, to);
      await rename(this.path(meta.id, 'eml', from), this.path(meta.id, 'eml', to));
      await this.syncs[to].sync();
      await unlinkIfPresent(this.path(meta.id, 'json', from));
      this.footerOnly.delete(key(meta.id, from));
      await this.syncs[from].sync();
    });
    if (to === 'failed') this.failedIds.add(meta.id);
    else this.failedIds.delete(meta.id);
  }

  /** How many entries the failed area holds (counted at init(), kept since). */
  get failedCount(): number {
    return this.failedIds.size;
  }

  /**
   * Removes an entry: delivered, or deleted by ops. The message first (the entry is gone with
   * it; metadata left behind is dropped at start). No directory fsync: if a crash undoes the
   * unlink, the entry is delivered again (the duplicate window), nothing is lost — and delivery
   * stays one fsync cheaper.
   */
  async remove(id: string, area: QueueArea = 'active'): Promise<void> {
    this.recent.delete(id);
    await this.exclusive(id, async () => {
      if (await this.journaled(id, area)) return this.journal.done(id, false);
      // not through the file worker: there the unlink would wait behind acceptance batches'
      // fsyncs, and until it is done a kill -9 means the message is delivered again
      await unlinkIfPresent(this.path(id, 'eml', area));
      if (this.footerOnly.delete(key(id, area))) return;
      await unlinkIfPresent(this.path(id, 'json', area));
    });
    if (area === 'failed') this.failedIds.delete(id);
  }

  async read(id: string, area: QueueArea = 'active'): Promise<QueueEntryMeta | undefined> {
    try {
      return JSON.parse(await readFile(this.path(id, 'json', area), 'utf8')) as QueueEntryMeta;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const own = await this.readFooter(id, area);
    if (own || !(await this.journaled(id, area))) return own;
    // a reader beside the relay (the CLI) may find the segment already deleted: the entry is gone
    return this.journal.meta(id).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
  }

  async list(area: QueueArea = 'active'): Promise<QueueEntryMeta[]> {
    // the journal before the directory: an entry given a file of its own meanwhile is then seen
    // at least once (in both, listed from its file), never in neither
    const journaled = area === 'active' ? (await this.journal.ensureLoaded((x) => this.hasOwnFile(x)), this.journal.ids()) : [];
    let names: string[];
    try {
      names = await readdir(this.areaDir(area));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const metas: QueueEntryMeta[] = [];
    const own = new Set<string>();
    for (const name of names.filter((n) => n.endsWith('.eml'))) {
      const meta = await this.read(name.slice(0, -4), area);
      if (meta) metas.push(meta);
      own.add(name.slice(0, -4));
    }
    for (const id of journaled) {
      if (own.has(id)) continue;
      const meta = await this.journal.meta(id).catch(() => undefined);
      if (meta) metas.push(meta);
    }
    return metas.sort((a, b) => a.receivedAt.localeCompare(b.receivedAt));
  }

  /**
   * The message of an entry (its first meta.size bytes). A small message's first attempt right
   * after acceptance is served from memory: the bytes just written, kept up to RECENT_BYTES in
   * all, so that the usual case (accepted, delivered at once) costs no open and read of the file.
   */
  messageStream(meta: Pick<QueueEntryMeta, 'id' | 'size'>, area: QueueArea = 'active'): Readable {
    const path = this.path(meta.id, 'eml', area);
    const kept = area === 'active' ? this.recent.take(meta.id) : undefined;
    // one buffer: nodemailer writes each chunk it reads to the upstream socket separately
    if (kept) return Readable.from([kept.length === 1 ? kept[0]! : Buffer.concat(kept)], { objectMode: false });
    if (meta.size === 0) return Readable.from([], { objectMode: false });
    const place = area === 'active' ? this.journal.place(meta.id) : undefined;
    if (place) return createReadStream(place.path, { start: place.offset, end: place.offset + place.size - 1 });
    return createReadStream(path, { start: 0, end: meta.size - 1 });
  }

  /** The bytes of a message still held from its acceptance (see messageStream), taken out; undefined once gone. */
  takeMessage(id: string): Buffer | undefined {
    const kept = this.recent.take(id);
    return kept && (kept.length === 1 ? kept[0]! : Buffer.concat(kept));
  }

  /** The message's header section (at most 1 MB), for failure notices. */
  async headerSection(meta: Pick<QueueEntryMeta, 'id' | 'size'>, area: QueueArea = 'active'): Promise<Buffer> {
    const place = (await this.journaled(meta.id, area)) ? this.journal.place(meta.id) : undefined;
    const fh = await open(place?.path ?? this.path(meta.id, 'eml', area), 'r');
    try {
      const { buffer, bytesRead } = await fh.read({ buffer: Buffer.alloc(Math.min(1024 * 1024, meta.size)), position: place?.offset ?? 0 });
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

  /** The metadata written at acceptance, from the footer of ID.eml; undefined when there is none. */
  private async readFooter(id: string, area: QueueArea): Promise<QueueEntryMeta | undefined> {
    let fd: number;
    try {
      fd = await fsOpen(this.path(id, 'eml', area), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const { size: total } = await fsFstat(fd);
      if (total < FOOTER_LENGTH) return undefined;
      const tail = await readAt(fd, FOOTER_LENGTH, total - FOOTER_LENGTH);
      const match = FOOTER_PATTERN.exec(tail.toString('latin1'));
      if (!match) return undefined;
      const length = Number(match[1]);
      if (length > total - FOOTER_LENGTH) return undefined;
      const meta = JSON.parse((await readAt(fd, length, total - FOOTER_LENGTH - length)).toString('utf8')) as QueueEntryMeta;
      if (meta.id !== id || meta.size !== total - FOOTER_LENGTH - length) return undefined;
      return meta;
    } catch (err) {
      if (err instanceof SyntaxError) return undefined;
      throw err;
    } finally {
      await fsClose(fd);
    }
  }
}

const WRITE_CHUNK = 64 * 1024;
/** Small messages (the ones written in one piece) kept for their first attempt: at most this much in all, whatever the backlog. */
const RECENT_BYTES = 16 * 1024 * 1024;

/** "\nsendas-queue-entry " + the JSON's length in 10 digits + "\n": 31 bytes at the very end of ID.eml. */
const FOOTER_LENGTH = 31;
const FOOTER_PATTERN = /^\nsendas-queue-entry (\d{10})\n$/;
function footer(jsonLength: number): Buffer {
  return Buffer.from(`\nsendas-queue-entry ${String(jsonLength).padStart(10, '0')}\n`, 'latin1');
}

let tmpCounter = 0;

function key(id: string, area: QueueArea): string {
  return `${area}/${id}`;
}

/** Bounded memory of recently accepted small messages, oldest dropped first. */
class RecentMessages {
  private readonly messages = new Map<string, { chunks: Buffer[]; size: number }>();
  private bytes = 0;

  constructor(private readonly budget: number) {}

  add(id: string, chunks: Buffer[], size: number): void {
    this.messages.set(id, { chunks, size });
    this.bytes += size;
    for (const [oldest, m] of this.messages) {
      if (this.bytes <= this.budget) break;
      this.messages.delete(oldest);
      this.bytes -= m.size;
    }
  }

  take(id: string): Buffer[] | undefined {
    const m = this.messages.get(id);
    if (!m) return undefined;
    this.messages.delete(id);
    this.bytes -= m.size;
    return m.chunks;
  }

  delete(id: string): void {
    this.take(id);
  }
}

function readAt(fd: number, length: number, position: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  return new Promise((resolve, reject) =>
    readCb(fd, buffer, 0, length, position, (err, bytesRead) => (err ? reject(err) : resolve(buffer.subarray(0, bytesRead)))),
  );
}

async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await fsUnlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export function isQueueId(id: string): boolean {
  return /^[A-Z0-9]{6,32}$/.test(id);
}
