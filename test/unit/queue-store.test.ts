import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { queueHolder, runQueueRequest, type QueueScheduler } from '../../src/queue/control.js';
import { DirSync } from '../../src/queue/dir-sync.js';
import type { QueueEntryMeta, RecipientState } from '../../src/queue/entry.js';
import { newMessageId } from '../../src/mail/message-id.js';
import { parseSegment } from '../../src/queue/journal-record.js';
import { QueueStore, type QueueArea } from '../../src/queue/store.js';
import { queueEntry } from './helpers.js';

let dir: string;
let store: QueueStore;
/** Stores a test opened besides `store` (a restart, another directory): closed after it. */
const others: QueueStore[] = [];
const opened = (s: QueueStore) => (others.push(s), s);

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sendas-queue-'));
  store = new QueueStore(join(dir, 'queue'));
  await store.init();
});

afterEach(async () => {
  vi.useRealTimers();
  // the directories it keeps open for fsync (a store a test reopened is closed by that test)
  await Promise.all([store, ...others.splice(0)].map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

const HEAD = 'Received: from crm.local\r\nFrom: Acme Support <support@acme.example>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nX-Raw: Grüße ÿ\r\n';
const head = Buffer.from(HEAD, 'utf8');

/** A message: header section, blank line, a body with every byte value (8-bit, NUL, bare CR/LF) and another CRLFCRLF inside. */
function message(bodySize = 4096): Buffer {
  const body = Buffer.alloc(bodySize);
  for (let i = 0; i < bodySize; i++) body[i] = (i * 7 + (i >> 8)) & 0xff;
  return Buffer.concat([head, Buffer.from('\r\n'), Buffer.from('first para\r\n\r\nsecond para\r\n'), body]);
}

function chunked(buf: Buffer, size: number): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
    })(),
  );
}

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
}
function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function recipient(address: string, status: RecipientState['status'] = 'pending'): RecipientState {
  return { address, status, attempts: 0 };
}

function metaFor(id: string, size: number, extra: Partial<QueueEntryMeta> = {}): QueueEntryMeta {
  // 8-bit and a non-ASCII subject: what the store writes must survive both
  const recipients = [recipient('a@example.net'), recipient('b@example.net')];
  return queueEntry(recipients, { id, envelope: { originalFrom: 'crm@acme.example', eightBit: true }, subject: 'Grüße', size, attempts: 0, ...extra });
}

/** Accepts a small entry and returns its metadata. */
async function enqueue(extra: Partial<QueueEntryMeta> = {}, id = newMessageId()): Promise<QueueEntryMeta> {
  return store.accept(id, chunked(message(), 1000), (size) => metaFor(id, size, extra));
}

async function names(area: QueueArea | 'tmp' | 'journal'): Promise<string[]> {
  return (await readdir(store.areaDir(area))).sort();
}

/** Where a journaled entry's message is on disk: its segment file and byte range. */
async function journalPlace(id: string): Promise<{ path: string; offset: number; size: number }> {
  for (const name of (await names('journal')).filter((n) => n.endsWith('.log'))) {
    const path = join(store.areaDir('journal'), name);
    for (const { meta, location } of parseSegment(await readFile(path))) {
      if (meta.id === id) return { path, offset: location.messageOffset, size: location.size };
    }
  }
  throw new Error(`${id} is not in the journal`);
}

/** Overwrites a journaled entry's message bytes on disk with `fill`, keeping the length (a read from disk would see them). */
async function overwriteJournaled(id: string, fill: number): Promise<void> {
  const { path, offset, size } = await journalPlace(id);
  const segment = await readFile(path);
  segment.fill(fill, offset, offset + size);
  await writeFile(path, segment);
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

describe('QueueStore.accept', () => {
  it('writes the message byte for byte (8-bit, 2 MB in chunks) followed by its metadata, in one file; makeMeta gets the exact size', async () => {
    const msg = message(2 * 1024 * 1024);
    const id = newMessageId();
    const makeMeta = vi.fn((size: number) => metaFor(id, size));
    const meta = await store.accept(id, chunked(msg, 64 * 1024 + 3), makeMeta);

    expect(makeMeta).toHaveBeenCalledTimes(1);
    expect(makeMeta).toHaveBeenCalledWith(msg.length);
    expect(meta.size).toBe(msg.length);

    const onDisk = await readFile(store.path(id, 'eml', 'active'));
    expect(sha(onDisk.subarray(0, msg.length))).toBe(sha(msg));
    // then the metadata as JSON and the footer giving its length: the file says what it holds
    const json = JSON.stringify(meta);
    expect(onDisk.subarray(msg.length).toString('utf8')).toBe(`${json}\nsendas-queue-entry ${String(Buffer.byteLength(json)).padStart(10, '0')}\n`);

    expect(await names('active')).toEqual([`${id}.eml`]);
    expect(await names('tmp')).toEqual([]);

    expect(await store.read(id)).toEqual(meta);
    expect(await store.list()).toEqual([meta]);
    const back = await buffer(store.messageStream(meta));
    expect(sha(back)).toBe(sha(msg));
    // another store on the same directory (a restart) reads the same entry from disk
    const restarted = opened(new QueueStore(store.dir));
    await restarted.init();
    expect(await restarted.list()).toEqual([meta]);
    expect(sha(await buffer(restarted.messageStream(meta)))).toBe(sha(msg));
  });

  it('a small message is delivered from memory the first time, from the journal afterwards: the same bytes', async () => {
    const meta = await enqueue();
    await overwriteJournaled(meta.id, 0x58);
    expect(sha(await buffer(store.messageStream(meta)))).toBe(sha(message()));
    expect(await buffer(store.messageStream(meta))).toEqual(Buffer.alloc(meta.size, 0x58));
  });

  it('the memory of small messages is bounded (16 MiB in all): the oldest are read from disk again', async () => {
    const metas: QueueEntryMeta[] = [];
    for (let i = 0; i < 300; i++) {
      const id = newMessageId();
      metas.push(await store.accept(id, Readable.from([Buffer.alloc(60 * 1024, 0x41 + (i % 26))]), (size) => metaFor(id, size)));
    }
    // 300 × 60 KiB = 17.6 MiB: the first ones no longer fit
    for (const meta of [metas[0]!, metas[299]!]) await overwriteJournaled(meta.id, 0x30);
    expect((await buffer(store.messageStream(metas[0]!)))[0]).toBe(0x30);
    expect((await buffer(store.messageStream(metas[299]!)))[0]).toBe(0x41 + (299 % 26));
  });

  it('reads an entry written by an older sendas (a bare message in ID.eml, metadata in ID.json)', async () => {
    const id = newMessageId();
    const msg = message();
    const meta = metaFor(id, msg.length);
    await writeFile(store.path(id, 'eml', 'active'), msg);
    await writeFile(store.path(id, 'json', 'active'), JSON.stringify(meta, null, 2));
    await store.init();
    expect(await store.list()).toEqual([meta]);
    expect(sha(await buffer(store.messageStream(meta)))).toBe(sha(msg));
    expect((await store.headerSection(meta)).equals(head)).toBe(true);
    await store.remove(id);
    expect(await names('active')).toEqual([]);
  });

  it('an empty message has size 0', async () => {
    const id = newMessageId();
    const meta = await store.accept(id, Readable.from([]), (size) => metaFor(id, size));
    expect(meta.size).toBe(0);
    expect(await store.read(id)).toEqual(meta);
    expect((await buffer(store.messageStream(meta))).length).toBe(0);
    expect((await buffer(opened(new QueueStore(store.dir)).messageStream(meta))).length).toBe(0);
  });

  it('headerSection: the header lines up to and including the CRLF before the blank line', async () => {
    const meta = await enqueue();
    const h = await store.headerSection(meta);
    expect(h.equals(head)).toBe(true);
    expect(h.subarray(-2).toString()).toBe('\r\n');
    expect(h.includes('first para')).toBe(false);
  });

  it('headerSection of a message without a body is the whole message', async () => {
    const id = newMessageId();
    const meta = await store.accept(id, Readable.from([head]), (size) => metaFor(id, size));
    expect((await store.headerSection(meta)).equals(head)).toBe(true);
  });

  it('every file is mode 0600', async () => {
    const meta = await enqueue();
    for (const name of await names('journal')) expect((await stat(join(store.areaDir('journal'), name))).mode & 0o777).toBe(0o600);
    meta.attempts = 1;
    await store.update(meta);
    for (const name of await names('journal')) expect((await stat(join(store.areaDir('journal'), name))).mode & 0o777).toBe(0o600);
    expect((await stat(store.path(meta.id, 'eml', 'active'))).mode & 0o777).toBe(0o600);
    meta.attempts = 2;
    await store.update(meta);
    expect((await stat(store.path(meta.id, 'json', 'active'))).mode & 0o777).toBe(0o600);
    await store.moveToFailed(meta);
    expect((await stat(store.path(meta.id, 'eml', 'failed'))).mode & 0o777).toBe(0o600);
    expect((await stat(store.path(meta.id, 'json', 'failed'))).mode & 0o777).toBe(0o600);
  });

  it('a source stream that fails mid-way rejects and leaves nothing in active/ or tmp/', async () => {
    const id = newMessageId();
    const makeMeta = vi.fn((size: number) => metaFor(id, size));
    const failing = Readable.from(
      (async function* () {
        yield Buffer.alloc(256 * 1024, 0x41);
        yield Buffer.alloc(256 * 1024, 0xe9);
        throw new Error('client went away');
      })(),
    );
    await expect(store.accept(id, failing, makeMeta)).rejects.toThrow('client went away');
    expect(makeMeta).not.toHaveBeenCalled();
    expect(await names('active')).toEqual([]);
    expect(await names('tmp')).toEqual([]);
    expect(await store.read(id)).toBeUndefined();
    expect(await store.list()).toEqual([]);
  });

  it('a stream destroyed with an error after some data rejects and leaves nothing', async () => {
    const id = newMessageId();
    let reads = 0;
    const src = new Readable({
      read() {
        // the first chunks go through; when the consumer asks for a third, the client is gone
        if (++reads <= 2) this.push(Buffer.alloc(64 * 1024, 0x42));
        else this.destroy(new Error('socket reset'));
      },
    });
    await expect(store.accept(id, src, (size) => metaFor(id, size))).rejects.toThrow('socket reset');
    expect(reads).toBeGreaterThanOrEqual(3);
    expect(await names('active')).toEqual([]);
    expect(await names('tmp')).toEqual([]);
  });

  it('makeMeta throwing rejects and leaves nothing', async () => {
    const id = newMessageId();
    await expect(
      store.accept(id, chunked(message(), 100), () => {
        throw new Error('no identity');
      }),
    ).rejects.toThrow('no identity');
    expect(await names('active')).toEqual([]);
    expect(await names('tmp')).toEqual([]);
  });

  it('list() returns every entry, oldest first', async () => {
    const b = await enqueue({ receivedAt: '2026-01-10T12:00:02.000Z' });
    const a = await enqueue({ receivedAt: '2026-01-10T12:00:01.000Z' });
    const c = await enqueue({ receivedAt: '2026-01-10T12:00:03.000Z' });
    expect((await store.list()).map((m) => m.id)).toEqual([a.id, b.id, c.id]);
    expect(await store.list('failed')).toEqual([]);
  });

  it('list() of a queue directory that does not exist yet is empty', async () => {
    expect(await opened(new QueueStore(join(dir, 'nowhere'))).list()).toEqual([]);
  });
});

describe('QueueStore.init', () => {
  it('creates the areas', async () => {
    const fresh = opened(new QueueStore(join(dir, 'fresh')));
    await fresh.init();
    for (const area of ['active', 'failed', 'tmp', 'requests'] as const) expect((await stat(fresh.areaDir(area))).isDirectory()).toBe(true);
  });

  it('removes tmp/ litter and an older sendas\'s message without metadata in active/, keeps complete entries', async () => {
    const kept = await enqueue();
    const failed = await enqueue();
    await store.moveToFailed(failed);
    // a relay that died mid-DATA, mid-metadata, and between the two renames of accept()
    await writeFile(join(store.areaDir('tmp'), 'AAAAAAAAAAAA.eml'), 'half a message');
    await writeFile(join(store.areaDir('tmp'), 'BBBBBBBBBBBB.1a2b3c4d.json'), '{"format":');
    await writeFile(join(store.areaDir('active'), 'CCCCCCCCCCCC.eml'), 'From: x\r\n\r\nnever acknowledged\r\n');

    await store.init();

    expect(await names('tmp')).toEqual([]);
    expect(await names('active')).toEqual([]);
    expect(await names('failed')).toEqual([`${failed.id}.eml`]);
    expect(await store.read(kept.id)).toEqual(kept);
    expect(await store.read(failed.id, 'failed')).toEqual(failed);
    expect(sha(await buffer(store.messageStream(kept)))).toBe(sha(message()));
  });

  it('is idempotent on a clean queue', async () => {
    const kept = await enqueue();
    await store.init();
    await store.init();
    expect(await store.list()).toEqual([kept]);
  });

  // A move writes the destination's metadata, renames the .eml, then removes the old metadata.
  // Whatever step a crash interrupts, the entry must come back whole in exactly one area.
  it('init() after a moveToFailed that crashed before deleting the active metadata: the entry is in failed/ only', async () => {
    const meta = await enqueue();
    meta.attempts = 2;
    await store.update(meta);
    meta.failedAt = '2026-01-11T12:00:00.000Z';
    await store.moveToFailed(meta);
    await writeFile(store.path(meta.id, 'json', 'active'), JSON.stringify(meta));
    await store.init();
    expect(await store.list('active')).toEqual([]);
    expect(await store.list('failed')).toEqual([meta]);
  });

  it('init() after a moveToFailed that crashed before renaming the message: the entry stays in active/', async () => {
    const meta = await enqueue();
    // the destination's metadata written, the .eml not yet moved
    await writeFile(store.path(meta.id, 'json', 'failed'), JSON.stringify({ ...meta, failedAt: '2026-01-11T12:00:00.000Z' }));
    await store.init();
    expect(await store.list('active')).toEqual([meta]);
    expect(await store.list('failed')).toEqual([]);
    expect(await names('failed')).toEqual([]);
  });

  it('init() drops metadata whose message a removal already deleted', async () => {
    const meta = await enqueue();
    meta.attempts = 1;
    await store.update(meta);
    await rm(store.path(meta.id, 'eml', 'active'));
    await store.init();
    expect(await names('active')).toEqual([]);
  });
});

describe('the journal (small entries until their first attempt concludes)', () => {
  it('entries accepted at once are all in the journal, none as a file of its own, and all come back after a restart with their bytes', async () => {
    const metas = await Promise.all(Array.from({ length: 50 }, () => enqueue()));
    expect(await names('active')).toEqual([]);
    expect(await names('tmp')).toEqual([]);
    const restarted = opened(new QueueStore(store.dir));
    await restarted.init();
    const listed = await restarted.list();
    expect(listed.map((m) => m.id).sort()).toEqual(metas.map((m) => m.id).sort());
    for (const meta of [metas[0]!, metas[49]!]) expect(sha(await buffer(restarted.messageStream(meta)))).toBe(sha(message()));
    expect((await restarted.headerSection(metas[7]!)).equals(head)).toBe(true);
  });

  it('a removed entry stays removed after a restart; an empty segment is deleted once the journal has moved on, and at start', async () => {
    // a segment per append: every accept opens a new one
    const small = opened(new QueueStore(store.dir, { journalSegmentBytes: 1 }));
    await small.init();
    const at = (id: string, size: number) => small.accept(id, chunked(message(), 1000), () => metaFor(id, size));
    const a = await at(newMessageId(), message().length);
    const b = await at(newMessageId(), message().length);
    expect(await names('journal')).toEqual(['0000000001.log', '0000000002.log']);
    await small.remove(a.id);
    // the worker deletes the segment after the done mark; its reply to the next request it gets
    // (an append: every reply of a batch goes after the batch's deletions) comes after that
    const c = await at(newMessageId(), message().length);
    expect((await names('journal')).filter((n) => n.startsWith('0000000001'))).toEqual([]);
    await small.remove(b.id);
    await small.remove(c.id);
    const restarted = opened(new QueueStore(store.dir));
    await restarted.init();
    expect(await restarted.list()).toEqual([]);
    expect(await names('journal')).toEqual([]);
  });

  it('entries that wait long for their first attempt do not keep every later segment: past 4 closed segments with entries, the oldest one\'s get files of their own', async () => {
    const small = opened(new QueueStore(store.dir, { journalSegmentBytes: 1 }));
    await small.init();
    const metas: QueueEntryMeta[] = [];
    for (let i = 0; i < 6; i++) {
      const id = newMessageId();
      metas.push(await small.accept(id, chunked(message(), 1000), (size) => metaFor(id, size)));
    }
    // the 6th append opened segment 6: segments 1–5 are closed and all hold an entry
    await vi.waitFor(async () => expect(await names('active')).toEqual([`${metas[0]!.id}.eml`]), { timeout: 5000, interval: 10 });
    await vi.waitFor(async () => expect((await names('journal')).filter((n) => n.startsWith('0000000001'))).toEqual([]), { timeout: 5000, interval: 10 });
    expect(sha(await buffer(small.messageStream(metas[0]!)))).toBe(sha(message()));
    const restarted = opened(new QueueStore(store.dir));
    await restarted.init();
    const listed = await restarted.list();
    expect(listed.map((m) => m.id).sort()).toEqual(metas.map((m) => m.id).sort());
    expect(listed.find((m) => m.id === metas[0]!.id)).toEqual(metas[0]);
    expect(sha(await buffer(restarted.messageStream(metas[0]!)))).toBe(sha(message()));
  });

  it('a tail cut off by a crash ends its segment: the entries before it stay, and new entries go to a new segment', async () => {
    const a = await enqueue();
    const { path } = await journalPlace(a.id);
    const whole = await readFile(path);
    // the start of a second record (header and part of its metadata), as a crash mid-append leaves it
    await writeFile(path, Buffer.concat([whole, whole.subarray(0, 60)]));
    await store.init();
    expect(await store.list()).toEqual([a]);
    const b = await enqueue();
    expect(await names('journal')).toEqual(['0000000001.log', '0000000002.log']);
    const restarted = opened(new QueueStore(store.dir));
    await restarted.init();
    expect((await restarted.list()).map((m) => m.id).sort()).toEqual([a.id, b.id].sort());
  });

  it('a record whose bytes changed on disk (checksum) is not an entry', async () => {
    const a = await enqueue();
    const { path, offset } = await journalPlace(a.id);
    const segment = await readFile(path);
    segment[offset + 10] = segment[offset + 10]! ^ 0x01;
    await writeFile(path, segment);
    await store.init();
    expect(await store.list()).toEqual([]);
  });

  it('a crash after an entry got a file of its own but before its done mark: the file wins, and the record never comes back', async () => {
    const meta = await enqueue();
    meta.attempts = 1;
    meta.nextAttemptAt = '2026-01-10T12:05:00.000Z';
    await store.update(meta);
    // the done mark lost
    for (const name of (await names('journal')).filter((n) => n.endsWith('.done'))) await writeFile(join(store.areaDir('journal'), name), '');
    const restarted = opened(new QueueStore(store.dir));
    await restarted.init();
    expect(await restarted.list()).toEqual([meta]);
    await restarted.remove(meta.id);
    const again = opened(new QueueStore(store.dir));
    await again.init();
    expect(await again.list()).toEqual([]);
  });

  it('an entry that failed on its first attempt goes to failed/ as a file of its own and leaves the journal', async () => {
    const meta = await enqueue();
    meta.failedAt = '2026-01-11T12:00:00.000Z';
    await store.moveToFailed(meta);
    expect(await names('failed')).toEqual([`${meta.id}.eml`]);
    expect(await store.list('active')).toEqual([]);
    expect(await store.read(meta.id, 'failed')).toEqual(meta);
    expect((await store.headerSection(meta, 'failed')).equals(head)).toBe(true);
    const restarted = opened(new QueueStore(store.dir));
    await restarted.init();
    expect(await restarted.list('active')).toEqual([]);
    expect(await restarted.list('failed')).toEqual([meta]);
  });
});

describe('QueueStore.update / move / remove / path', () => {
  it('update() of a journaled entry gives it a file of its own; the next writes the metadata beside it, replaced by rename (new inode); no temporary file', async () => {
    const meta = await enqueue();
    meta.attempts = 1;
    await store.update(meta);
    expect(await names('active')).toEqual([`${meta.id}.eml`]);
    expect(await store.read(meta.id)).toEqual(meta);
    expect(await opened(new QueueStore(store.dir)).list()).toEqual([meta]);
    meta.attempts = 2;
    await store.update(meta);
    const before = await stat(store.path(meta.id, 'json', 'active'));
    meta.attempts = 3;
    meta.nextAttemptAt = '2026-01-10T12:15:00.000Z';
    meta.recipients[0]!.status = 'delivered';
    meta.recipients[0]!.deliveredAt = '2026-01-10T12:01:00.000Z';
    await store.update(meta);
    const after = await stat(store.path(meta.id, 'json', 'active'));
    expect(after.ino).not.toBe(before.ino);
    expect(await store.read(meta.id)).toEqual(meta);
    expect(await names('tmp')).toEqual([]);
    // the message is untouched
    expect(sha(await buffer(opened(new QueueStore(store.dir)).messageStream(meta)))).toBe(sha(message()));
  });

  it('update() of an entry in failed/ writes there', async () => {
    const meta = await enqueue();
    await store.moveToFailed(meta);
    meta.lastError = { kind: 'recipient', code: 550, enhanced: '5.1.1', reason: 'no such user', at: '2026-01-10T12:00:00.000Z' };
    await store.update(meta, 'failed');
    expect(await store.read(meta.id, 'failed')).toEqual(meta);
    expect(await store.read(meta.id, 'active')).toBeUndefined();
  });

  it('moveToFailed() moves both files with the new metadata; moveToActive() brings them back', async () => {
    const meta = await enqueue();
    meta.attempts = 1;
    await store.update(meta); // a file of its own and a metadata file
    meta.failedAt = '2026-01-11T12:00:00.000Z';
    await store.moveToFailed(meta);
    expect(await names('active')).toEqual([]);
    expect(await names('failed')).toEqual([`${meta.id}.eml`, `${meta.id}.json`].sort());
    expect(await store.read(meta.id, 'failed')).toEqual(meta);
    expect(sha(await buffer(store.messageStream(meta, 'failed')))).toBe(sha(message()));
    expect(await store.list('failed')).toEqual([meta]);
    expect(await store.list('active')).toEqual([]);

    meta.failedAt = undefined;
    meta.requeuedAt = '2026-01-12T12:00:00.000Z';
    await store.moveToActive(meta);
    expect(await names('failed')).toEqual([]);
    expect(await names('active')).toEqual([`${meta.id}.eml`, `${meta.id}.json`].sort());
    const back = await store.read(meta.id);
    expect(back?.requeuedAt).toBe('2026-01-12T12:00:00.000Z');
    expect(back?.failedAt).toBeUndefined();
    expect(sha(await buffer(store.messageStream(meta)))).toBe(sha(message()));
    expect(await names('tmp')).toEqual([]);
  });

  it('remove() deletes both files, in either area; removing twice is harmless', async () => {
    const a = await enqueue();
    const b = await enqueue();
    await store.moveToFailed(b);
    await store.remove(a.id);
    await store.remove(b.id, 'failed');
    expect(await names('active')).toEqual([]);
    expect(await names('failed')).toEqual([]);
    expect(await store.read(a.id)).toBeUndefined();
    await expect(store.remove(a.id)).resolves.toBeUndefined();
  });

  it('remove() leaves other entries alone', async () => {
    const a = await enqueue();
    const b = await enqueue();
    await store.remove(a.id);
    expect(await store.list()).toEqual([b]);
  });

  it('path() refuses anything that is not a queue id', () => {
    for (const bad of ['../x', '..', '', 'ABC', 'abcdefghjklm', 'ABCDEF/../X', 'ABCDEF.json', '/etc/passwd', 'ABCDEFGH\n', 'A'.repeat(33)]) {
      expect(() => store.path(bad, 'json', 'active'), bad).toThrow(/not a queue id/);
    }
    expect(store.path('ABCDEFGHJKLM', 'eml', 'failed')).toBe(join(store.dir, 'failed', 'ABCDEFGHJKLM.eml'));
  });

  it('read(), remove() and headerSection() refuse a path-traversing id instead of touching another file', async () => {
    const outside = join(store.dir, 'x.json');
    await writeFile(outside, JSON.stringify({ secret: true }));
    await expect(store.read('../x')).rejects.toThrow(/not a queue id/);
    await expect(store.remove('../x')).rejects.toThrow(/not a queue id/);
    await expect(store.headerSection({ id: '../x', size: 10 })).rejects.toThrow(/not a queue id/);
    expect(() => store.messageStream({ id: '../x', size: 10 })).toThrow(/not a queue id/);
    expect(await exists(outside)).toBe(true);
  });

  it('new message ids are valid queue ids', () => {
    for (let i = 0; i < 200; i++) expect(() => store.path(newMessageId(), 'eml', 'active')).not.toThrow();
  });
});

describe('DirSync', () => {
  it('many concurrent sync() calls cost at most 2 fsyncs', async () => {
    const sync = new DirSync(store.areaDir('active'));
    await Promise.all(Array.from({ length: 50 }, () => sync.sync()));
    expect(sync.count).toBeGreaterThanOrEqual(1);
    expect(sync.count).toBeLessThanOrEqual(2);
  });

  /** A DirSync whose fsyncs (real ones) each wait for the test to release them. */
  function gated(path: string) {
    const sync = new DirSync(path);
    const inner = sync as unknown as { fsync: () => Promise<void> };
    const real = inner.fsync.bind(sync);
    const started: Deferred[] = [];
    const release: Deferred[] = [];
    const at = (list: Deferred[], n: number) => (list[n] ??= deferred());
    let n = 0;
    inner.fsync = async () => {
      const mine = n++;
      at(started, mine).resolve();
      await real();
      await at(release, mine).promise;
    };
    return { sync, started: (i: number) => at(started, i).promise, release: (i: number) => at(release, i).resolve(), startedCount: () => n };
  }

  it('a call made while an fsync runs resolves only after a later fsync, which all such calls share', async () => {
    const g = gated(store.areaDir('active'));
    const events: string[] = [];
    const track = (name: string, p: Promise<void>) => p.then(() => events.push(name));
    const first = track('first', g.sync.sync());
    await g.started(0);
    const second = track('second', g.sync.sync());
    const third = track('third', g.sync.sync());
    expect(g.startedCount()).toBe(1); // no fsync of their own while one runs

    g.release(0);
    await first;
    await g.started(1);
    expect(events).toEqual(['first']); // the first fsync may have begun before their renames
    // a call now must not share the fsync that is already running
    const fourth = track('fourth', g.sync.sync());
    g.release(1);
    await Promise.all([second, third]);
    expect(events).toEqual(['first', 'second', 'third']);
    await g.started(2);
    expect(events).not.toContain('fourth');
    g.release(2);
    await fourth;
    expect(events).toEqual(['first', 'second', 'third', 'fourth']);
    expect(g.sync.count).toBe(3);
  });

  it('a call after everything settled starts a new fsync', async () => {
    const sync = new DirSync(store.areaDir('active'));
    await sync.sync();
    await sync.sync();
    await sync.sync();
    expect(sync.count).toBe(3);
  });

  it('an fsync that fails rejects its callers, and the next call tries again', async () => {
    const sync = new DirSync(join(dir, 'missing'));
    await expect(sync.sync()).rejects.toThrow(/ENOENT/);
    await mkdir(join(dir, 'missing'));
    await expect(sync.sync()).resolves.toBeUndefined();
  });
});

describe('runQueueRequest without a relay', () => {
  it('retry of an active entry clears nextAttemptAt on disk', async () => {
    const meta = await enqueue({ attempts: 2, nextAttemptAt: '2026-01-10T12:20:00.000Z' });
    const res = await runQueueRequest(store, { op: 'retry', id: meta.id });
    expect(res).toEqual({ ok: true, message: `${meta.id} will be tried now` });
    const back = await store.read(meta.id);
    expect(back?.nextAttemptAt).toBeUndefined();
    expect(back?.attempts).toBe(2);
    expect(back?.recipients).toEqual(meta.recipients);
  });

  it('retry of a failed entry: back in active/, failed recipients pending again, delivered ones kept, requeuedAt set', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: Date.UTC(2026, 0, 20, 9, 30, 0) });
    const err = { kind: 'recipient' as const, code: 550, enhanced: '5.1.1', reason: 'no such user', at: '2026-01-10T12:05:00.000Z' };
    const meta = await enqueue({
      attempts: 5,
      recipients: [
        { address: 'ok@example.net', status: 'delivered', attempts: 1, deliveredAt: '2026-01-10T12:00:05.000Z', upstreamReply: '250 2.0.0 OK' },
        { address: 'gone@example.net', status: 'failed', attempts: 1, lastError: err },
        { address: 'late@example.net', status: 'failed', attempts: 5, lastError: { ...err, code: 451, enhanced: '4.4.1' } },
      ],
    });
    meta.failedAt = '2026-01-12T12:00:00.000Z';
    meta.nextAttemptAt = '2026-01-12T12:15:00.000Z';
    await store.moveToFailed(meta);

    const res = await runQueueRequest(store, { op: 'retry', id: meta.id });
    expect(res).toEqual({ ok: true, message: `${meta.id} is back in the queue for 2 recipients and will be tried now` });

    expect(await names('failed')).toEqual([]);
    expect(await names('active')).toEqual([`${meta.id}.eml`, `${meta.id}.json`].sort());
    const back = (await store.read(meta.id))!;
    expect(sha(await buffer(store.messageStream(back)))).toBe(sha(message()));
    expect(back.recipients.map((r) => [r.address, r.status])).toEqual([
      ['ok@example.net', 'delivered'],
      ['gone@example.net', 'pending'],
      ['late@example.net', 'pending'],
    ]);
    expect(back.recipients[0]).toEqual(meta.recipients[0]);
    expect(back.requeuedAt).toBe('2026-01-20T09:30:00.000Z');
    expect(back.failedAt).toBeUndefined();
    expect(back.nextAttemptAt).toBeUndefined();
    expect(back.receivedAt).toBe(meta.receivedAt);
  });

  it('retry of a failed entry with one failed recipient says "1 recipient"', async () => {
    const meta = await enqueue({ recipients: [recipient('x@example.net', 'failed')] });
    await store.moveToFailed(meta);
    const res = await runQueueRequest(store, { op: 'retry', id: meta.id });
    expect(res.message).toBe(`${meta.id} is back in the queue for 1 recipient and will be tried now`);
  });

  it('retry-all clears nextAttemptAt of every active entry and leaves failed ones alone', async () => {
    const a = await enqueue({ nextAttemptAt: '2026-01-10T12:20:00.000Z', receivedAt: '2026-01-10T12:00:01.000Z' });
    const b = await enqueue({ nextAttemptAt: '2026-01-10T13:20:00.000Z', receivedAt: '2026-01-10T12:00:02.000Z' });
    const c = await enqueue({ nextAttemptAt: undefined, receivedAt: '2026-01-10T12:00:03.000Z' });
    const f = await enqueue({ recipients: [recipient('x@example.net', 'failed')] });
    f.failedAt = '2026-01-11T00:00:00.000Z';
    await store.moveToFailed(f);

    const res = await runQueueRequest(store, { op: 'retry-all' });
    expect(res).toEqual({ ok: true, message: '3 queued messages will be tried now' });
    const active = await store.list();
    expect(active.map((m) => m.id)).toEqual([a.id, b.id, c.id]);
    for (const m of active) expect(m.nextAttemptAt).toBeUndefined();
    expect(await store.read(f.id, 'failed')).toEqual(f);
  });

  it('retry-all with one or no entries', async () => {
    expect(await runQueueRequest(store, { op: 'retry-all' })).toEqual({ ok: true, message: '0 queued messages will be tried now' });
    await enqueue();
    expect(await runQueueRequest(store, { op: 'retry-all' })).toEqual({ ok: true, message: '1 queued message will be tried now' });
  });

  it('delete from active and from failed', async () => {
    const a = await enqueue();
    const f = await enqueue();
    await store.moveToFailed(f);
    const keep = await enqueue();

    expect(await runQueueRequest(store, { op: 'delete', id: a.id })).toEqual({ ok: true, message: `${a.id} deleted` });
    expect(await runQueueRequest(store, { op: 'delete', id: f.id })).toEqual({ ok: true, message: `${f.id} deleted from the failed area` });
    expect((await store.list()).map((m) => m.id)).toEqual([keep.id]);
    expect(await names('failed')).toEqual([]);
    // the same seen by a store that reads the queue afresh (the CLI, a restart)
    expect((await opened(new QueueStore(store.dir)).list()).map((m) => m.id)).toEqual([keep.id]);
    const restarted = opened(new QueueStore(store.dir));
    await restarted.init();
    expect((await restarted.list()).map((m) => m.id)).toEqual([keep.id]);
  });

  it('an unknown id: ok false, naming the id, nothing touched', async () => {
    const keep = await enqueue();
    for (const req of [{ op: 'retry', id: 'ZZZZZZZZZZZZ' }, { op: 'delete', id: 'ZZZZZZZZZZZZ' }] as const) {
      const res = await runQueueRequest(store, req);
      expect(res.ok).toBe(false);
      expect(res.message).toContain('ZZZZZZZZZZZZ');
    }
    expect(await store.list()).toEqual([keep]);
  });

  it('a deleted entry is unknown afterwards', async () => {
    const a = await enqueue();
    await runQueueRequest(store, { op: 'delete', id: a.id });
    expect((await runQueueRequest(store, { op: 'delete', id: a.id })).ok).toBe(false);
    expect((await runQueueRequest(store, { op: 'retry', id: a.id })).ok).toBe(false);
  });
});

describe('runQueueRequest with the relay\'s scheduler', () => {
  function fakeScheduler(running: string[] = []): QueueScheduler & { retryNow: ReturnType<typeof vi.fn>; forget: ReturnType<typeof vi.fn> } {
    return {
      retryNow: vi.fn((_meta: QueueEntryMeta) => undefined),
      forget: vi.fn((id: string) => !running.includes(id)),
    };
  }

  it('retry of an active entry tells the scheduler with the updated metadata', async () => {
    const meta = await enqueue({ nextAttemptAt: '2026-01-10T12:20:00.000Z' });
    const s = fakeScheduler();
    await runQueueRequest(store, { op: 'retry', id: meta.id }, s);
    expect(s.retryNow).toHaveBeenCalledTimes(1);
    const told = s.retryNow.mock.calls[0]![0] as QueueEntryMeta;
    expect(told.id).toBe(meta.id);
    expect(told.nextAttemptAt).toBeUndefined();
    expect(s.forget).not.toHaveBeenCalled();
  });

  it('retry of a failed entry tells the scheduler after it is back in active/', async () => {
    const meta = await enqueue({ recipients: [recipient('x@example.net', 'failed')] });
    await store.moveToFailed(meta);
    const s = fakeScheduler();
    s.retryNow.mockImplementation((m: QueueEntryMeta) => {
      // the scheduler may read the entry at once: it must already be in active/
      expect(m.recipients[0]!.status).toBe('pending');
      expect(m.requeuedAt).toBeDefined();
      expect(existsSync(store.path(m.id, 'json', 'active'))).toBe(true);
      expect(existsSync(store.path(m.id, 'eml', 'active'))).toBe(true);
      expect(existsSync(store.path(m.id, 'json', 'failed'))).toBe(false);
    });
    await runQueueRequest(store, { op: 'retry', id: meta.id }, s);
    expect(s.retryNow).toHaveBeenCalledTimes(1);
    expect((s.retryNow.mock.calls[0]![0] as QueueEntryMeta).id).toBe(meta.id);
    expect(await store.read(meta.id, 'active')).toBeDefined();
  });

  it('retry-all tells the scheduler about each active entry', async () => {
    const a = await enqueue({ receivedAt: '2026-01-10T12:00:01.000Z' });
    const b = await enqueue({ receivedAt: '2026-01-10T12:00:02.000Z' });
    const s = fakeScheduler();
    await runQueueRequest(store, { op: 'retry-all' }, s);
    expect(s.retryNow.mock.calls.map((c) => (c[0] as QueueEntryMeta).id)).toEqual([a.id, b.id]);
  });

  it('delete of an idle entry: forget() then the files are removed', async () => {
    const meta = await enqueue();
    const s = fakeScheduler();
    const res = await runQueueRequest(store, { op: 'delete', id: meta.id }, s);
    expect(s.forget).toHaveBeenCalledWith(meta.id);
    expect(res).toEqual({ ok: true, message: `${meta.id} deleted` });
    expect(await store.list()).toEqual([]);
    expect(await opened(new QueueStore(store.dir)).list()).toEqual([]);
  });

  it('delete of an entry being delivered (forget returns false) keeps the files and says it is deleted after the attempt', async () => {
    const meta = await enqueue();
    const s = fakeScheduler([meta.id]);
    const res = await runQueueRequest(store, { op: 'delete', id: meta.id }, s);
    expect(s.forget).toHaveBeenCalledWith(meta.id);
    expect(res.ok).toBe(true);
    expect(res.message).toBe(`${meta.id} is being delivered right now; it will be deleted when this attempt ends`);
    expect(await store.read(meta.id)).toEqual(meta);
    expect(await opened(new QueueStore(store.dir)).read(meta.id)).toEqual(meta);
  });

  it('delete from the failed area removes the files even though the scheduler does not track it', async () => {
    const meta = await enqueue();
    await store.moveToFailed(meta);
    const s = fakeScheduler([meta.id]);
    const res = await runQueueRequest(store, { op: 'delete', id: meta.id }, s);
    expect(res).toEqual({ ok: true, message: `${meta.id} deleted from the failed area` });
    expect(await names('failed')).toEqual([]);
  });

  it('an unknown id never reaches the scheduler', async () => {
    const s = fakeScheduler();
    expect((await runQueueRequest(store, { op: 'retry', id: 'ZZZZZZZZZZZZ' }, s)).ok).toBe(false);
    expect((await runQueueRequest(store, { op: 'delete', id: 'ZZZZZZZZZZZZ' }, s)).ok).toBe(false);
    expect(s.retryNow).not.toHaveBeenCalled();
    expect(s.forget).not.toHaveBeenCalled();
  });
});

describe('queueHolder', () => {
  const pidFile = () => join(store.dir, 'sendas.pid');

  it('no pid file → undefined', async () => {
    expect(await queueHolder(store.dir)).toBeUndefined();
  });

  it('a pid file with this process\'s pid → that pid', async () => {
    await writeFile(pidFile(), `${process.pid}\n`);
    expect(await queueHolder(store.dir)).toBe(process.pid);
  });

  it('a pid file with the pid of a process that has exited → undefined', async () => {
    const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    const pid = child.pid!;
    expect(pid).toBeGreaterThan(0);
    await once(child, 'exit');
    await writeFile(pidFile(), `${pid}\n`);
    expect(await queueHolder(store.dir)).toBeUndefined();
  });

  it.each(['', 'abc', '0', '-1', '12.5'])('a pid file containing %j → undefined', async (content) => {
    await writeFile(pidFile(), content);
    expect(await queueHolder(store.dir)).toBeUndefined();
  });
});
