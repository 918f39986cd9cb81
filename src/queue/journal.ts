import { open, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { QueueEntryMeta } from './entry.js';
import { DoneMarks } from './file-done-marks.js';
import { SEGMENT_NAME, segmentPath } from './file-names.js';
import { fileWorker } from './file-worker.js';
import { encodeRecord, parseSegment, RECORD_HEADER_LENGTH, type RecordLocation } from './journal-record.js';

/** Where a journaled entry's message is: a byte range of a segment file. */
export interface JournalPlace {
  readonly path: string;
  readonly offset: number;
  readonly size: number;
}

interface Entry {
  readonly segment: number;
  readonly location: RecordLocation;
}

/**
 * The queue's journal: small entries accepted together share one append and one fdatasync
 * (group commit). Segments are `journal/NNNNNNNNNN.log` (records, journal-record.ts) with
 * `NNNNNNNNNN.done` beside (ids of entries no longer there: delivered, deleted, or moved to a
 * file of their own). An entry lives in the journal only until its first attempt concludes: a
 * delivered one is marked done, any other state is written as a file of its own first (the
 * store's update and move), so segments stay short-lived and the durable, editable form of an
 * entry stays the one-file-per-entry layout. A segment is deleted when nothing is left in it and
 * it is no longer appended to; at start, a record marked done or that has a file of its own
 * (written before its done mark reached the disk) is not an entry.
 *
 * Done marks of delivered or deleted entries are not fdatasync'd: a crash of the process keeps
 * them (page cache), a power cut may lose the last seconds of them and the entries are
 * delivered again — the same duplicate window as the unsynced unlink of a delivered file entry.
 * The main thread writes them at once (file-done-marks.ts), so they do not wait behind the file
 * worker's fsyncs. Marks of entries that moved to a file of their own are synced, by the file
 * worker after the file: losing one would bring back an entry whose file ops may since have deleted.
 */
export class Journal {
  private readonly entries = new Map<string, Entry>();
  private readonly live = new Map<number, number>();
  /** Segments below this are no longer appended to: deleted as soon as they are empty. */
  private latest = 1;
  private firstSegment = 1;
  private loaded: Promise<void> | undefined;
  /** Metadata read by load(), handed out once by meta() (the queue runner's start). */
  private readonly loadedMeta = new Map<string, QueueEntryMeta>();
  /** Segments whose remaining entries are being given files of their own (see crowded). */
  private readonly evicting = new Set<number>();
  private readonly doneMarks = new DoneMarks();
  /**
   * Called with the entries of the oldest segment when more than MAX_OLD_SEGMENTS closed
   * segments still hold entries: entries that wait long for their first attempt (a rate-limited
   * account's backlog) would otherwise keep every segment written since alive. The store gives
   * them files of their own, which frees the segment.
   */
  crowded: ((ids: string[]) => Promise<void>) | undefined;

  constructor(
    readonly dir: string,
    private readonly segmentBytes = SEGMENT_BYTES,
  ) {}

  /**
   * Reads the segments. `hasOwnFile` tells whether an entry exists as a file of its own; with
   * `tidy` (the relay starting) such records are marked done and empty segments deleted.
   */
  load(hasOwnFile: (id: string) => boolean, tidy: boolean): Promise<void> {
    this.loaded = this.scan(hasOwnFile, tidy);
    return this.loaded;
  }

  /** For readers that did not load() (the CLI): the journal as it is on disk now, read once. */
  ensureLoaded(hasOwnFile: (id: string) => boolean): Promise<void> {
    return (this.loaded ??= this.scan(hasOwnFile, false));
  }

  private async scan(hasOwnFile: (id: string) => boolean, tidy: boolean): Promise<void> {
    this.entries.clear();
    this.live.clear();
    this.loadedMeta.clear();
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const segments = names.filter((n) => SEGMENT_NAME.test(n) && n.endsWith('.log')).map((n) => Number(n.slice(0, 10)));
    for (const name of names.filter((n) => SEGMENT_NAME.test(n) && n.endsWith('.done'))) {
      // done marks whose segment was deleted (a crash between the two unlinks)
      if (tidy && !segments.includes(Number(name.slice(0, 10)))) await rm(join(this.dir, name), { force: true });
    }
    for (const segment of segments.sort((a, b) => a - b)) {
      const done = await readDone(this.segmentPath(segment, 'done'));
      let live = 0;
      for (const { meta, location } of parseSegment(await readFile(this.segmentPath(segment, 'log')))) {
        if (done.has(meta.id) || this.entries.has(meta.id)) continue;
        if (hasOwnFile(meta.id)) {
          if (tidy) await fileWorker.markDone(this.dir, segment, meta.id);
          continue;
        }
        this.entries.set(meta.id, { segment, location });
        this.loadedMeta.set(meta.id, meta);
        live++;
      }
      if (live > 0) this.live.set(segment, live);
      else if (tidy) await fileWorker.release(this.dir, segment);
      this.firstSegment = Math.max(this.firstSegment, segment + 1);
    }
    this.latest = this.firstSegment;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  ids(): string[] {
    return [...this.entries.keys()];
  }

  /** Appends an entry; resolves when it is durable, with the message's bytes inside the record (kept for the first attempt). */
  async append(id: string, json: Buffer, message: readonly Buffer[], size: number): Promise<Buffer> {
    const record = encodeRecord(json, message, size);
    const { segment, offset } = await fileWorker.append(this.dir, record, this.firstSegment, this.segmentBytes);
    const jsonOffset = offset + RECORD_HEADER_LENGTH;
    this.entries.set(id, { segment, location: { jsonOffset, jsonLength: json.length, messageOffset: jsonOffset + json.length, size } });
    this.live.set(segment, (this.live.get(segment) ?? 0) + 1);
    this.firstSegment = Math.max(this.firstSegment, segment);
    if (segment > this.latest) {
      this.latest = segment;
      // the worker moved on to a new segment: the ones before it that are already empty can go
      for (const [s, n] of this.live) if (n === 0 && s < segment) this.releaseSegment(s);
      this.checkCrowded();
    }
    return record.subarray(RECORD_HEADER_LENGTH + json.length);
  }

  private checkCrowded(): void {
    const closed = [...this.live.keys()].filter((s) => s < this.latest && !this.evicting.has(s)).sort((a, b) => a - b);
    if (closed.length <= MAX_OLD_SEGMENTS || !this.crowded) return;
    const oldest = closed[0]!;
    this.evicting.add(oldest);
    // entries that could not be moved out keep the segment; the next new segment tries again
    void this.crowded([...this.entries].filter(([, e]) => e.segment === oldest).map(([id]) => id)).finally(() => this.evicting.delete(oldest));
  }

  /** The byte range of an entry's message. */
  place(id: string): JournalPlace | undefined {
    const entry = this.entries.get(id);
    if (!entry) return undefined;
    return { path: this.segmentPath(entry.segment, 'log'), offset: entry.location.messageOffset, size: entry.location.size };
  }

  /** The metadata the entry was accepted with. */
  async meta(id: string): Promise<QueueEntryMeta | undefined> {
    const loaded = this.loadedMeta.get(id);
    if (loaded) {
      this.loadedMeta.delete(id);
      return loaded;
    }
    const entry = this.entries.get(id);
    if (!entry) return undefined;
    const json = await readRange(this.segmentPath(entry.segment, 'log'), entry.location.jsonOffset, entry.location.jsonLength);
    return JSON.parse(json.toString('utf8')) as QueueEntryMeta;
  }

  /** The entry's message, read whole (a journaled message is small). */
  async message(id: string): Promise<Buffer | undefined> {
    const place = this.place(id);
    return place && readRange(place.path, place.offset, place.size);
  }

  /** The entry is no longer in the journal; `durable` when it now has a file of its own. */
  async done(id: string, durable: boolean): Promise<void> {
    const entry = this.entries.get(id);
    if (!entry) return;
    this.entries.delete(id);
    this.loadedMeta.delete(id);
    const marked = durable ? fileWorker.markDone(this.dir, entry.segment, id) : this.doneMarks.mark(this.segmentPath(entry.segment, 'done'), id);
    const live = (this.live.get(entry.segment) ?? 1) - 1;
    this.live.set(entry.segment, live);
    if (live === 0 && entry.segment < this.latest) this.releaseSegment(entry.segment);
    await marked;
  }

  /** Lets go of the segment being appended to (the relay stops, or a new store takes over the directory). */
  close(): Promise<void> {
    this.doneMarks.close();
    return fileWorker.closeJournal(this.dir);
  }

  private releaseSegment(segment: number): void {
    this.live.delete(segment);
    this.evicting.delete(segment);
    this.doneMarks.forget(this.segmentPath(segment, 'done'));
    // a failed deletion leaves an empty segment that the next start deletes
    fileWorker.release(this.dir, segment).catch(() => undefined);
  }

  private segmentPath(segment: number, kind: 'log' | 'done'): string {
    return segmentPath(this.dir, segment, kind);
  }
}

/** A segment is closed and a new one begun past this size: the unit in which journal space is given back. */
const SEGMENT_BYTES = 8 * 1024 * 1024;
/** Closed segments that may still hold entries before the oldest one's are moved out: 4 × 8 MiB of journal beyond the backlog itself. */
const MAX_OLD_SEGMENTS = 4;

async function readDone(path: string): Promise<Set<string>> {
  try {
    return new Set((await readFile(path, 'latin1')).split('\n').filter((id) => id !== ''));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw err;
  }
}

async function readRange(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const { buffer, bytesRead } = await fh.read({ buffer: Buffer.alloc(length), position: offset });
    if (bytesRead !== length) throw new Error(`queue journal ${path}: expected ${length} bytes at ${offset}, read ${bytesRead}`);
    return buffer;
  } finally {
    await fh.close();
  }
}
