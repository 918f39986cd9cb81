import { Worker } from 'node:worker_threads';
import { PostBatch } from '../threads/post-batch.js';

/**
 * The queue's file work — append small entries to the journal, mark them done, write an entry
 * file durably, delete one — done by one worker thread with plain synchronous system calls, off
 * the relay's main thread.
 *
 * Why: profiles of the benchmark showed the main thread, which runs every SMTP session, spending
 * a fifth of its time dispatching these calls to libuv's thread pool one by one (open, write,
 * fsync, close, rename, the directory's fsync, unlink), each a round trip through the event loop.
 * Here requests travel in batches (PostBatch). Requests that arrive while the worker is busy form
 * its next batch — group commit: the batch's journal records are appended to the current segment
 * with one write and made durable with one fdatasync; entry files are all written, then each is
 * fsync'd and renamed, then each directory is fsync'd once. Every request is answered only after
 * that, so a 250 still means "on disk". Done marks and deletions come after the batch's writes,
 * which is why the queue runner does not hold a delivery slot while one is pending.
 *
 * The worker's code is plain JavaScript evaluated from a string (it needs only built-in modules,
 * taken with process.getBuiltinModule, so it runs as CommonJS or ESM alike), so the same module
 * works compiled in dist/ and from the TypeScript sources under test.
 */
const WORKER_SOURCE = String.raw`
const { parentPort } = process.getBuiltinModule('node:worker_threads');
const fs = process.getBuiltinModule('node:fs');
const { dirname } = process.getBuiltinModule('node:path');
let queue = [];
let scheduled = false;
parentPort.on('message', (batch) => {
  for (const m of batch) queue.push(m);
  if (!scheduled) { scheduled = true; setImmediate(run); }
});
function failure(e) { return { message: e.message, code: e.code, syscall: e.syscall }; }
function writeAll(fd, chunks) {
  let rest = chunks;
  while (rest.length > 0) {
    let written = fs.writevSync(fd, rest);
    const next = [];
    for (const c of rest) {
      if (written >= c.length) { written -= c.length; continue; }
      next.push(written > 0 ? c.subarray(written) : c);
      written = 0;
    }
    rest = next;
  }
}
// The journal (store.ts, journal-record.ts): per journal directory, the segment being appended
// to. A segment is created exclusively; after an error it is left as it is (its tail cut back)
// and the next append opens a new one, so a segment's damaged part can only be at its end.
const journals = new Map();
const doneFiles = new Map();
// named as Journal.segmentPath names them (journal.ts)
function segmentPath(dir, segment, kind) { return dir + '/' + String(segment).padStart(10, '0') + '.' + kind; }
function syncDir(dir) {
  const fd = fs.openSync(dir, 'r');
  try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
}
function currentSegment(m) {
  let j = journals.get(m.dir);
  if (j && j.fd !== undefined && j.size < m.segmentBytes) return j;
  let segment = j ? j.segment + 1 : m.firstSegment;
  if (j && j.fd !== undefined) fs.closeSync(j.fd);
  for (;;) {
    try {
      const fd = fs.openSync(segmentPath(m.dir, segment, 'log'), 'ax', 0o600);
      j = { segment, fd, size: 0, fresh: true };
      journals.set(m.dir, j);
      return j;
    } catch (e) {
      if (e.code !== 'EEXIST') { journals.set(m.dir, { segment, fd: undefined }); throw e; }
      segment++;
    }
  }
}
function appendRecords(appends, replies) {
  const byDir = new Map();
  for (const m of appends) {
    if (!byDir.has(m.dir)) byDir.set(m.dir, []);
    byDir.get(m.dir).push(m);
  }
  for (const [, records] of byDir) {
    let j;
    let start;
    try {
      j = currentSegment(records[0]);
      start = j.size;
      writeAll(j.fd, records.map((m) => Buffer.from(m.record.buffer, m.record.byteOffset, m.record.byteLength)));
      // one fdatasync makes every record of the batch durable, with the file's new length
      fs.fdatasyncSync(j.fd);
      if (j.fresh) { syncDir(records[0].dir); j.fresh = false; }
    } catch (e) {
      if (j && j.fd !== undefined) {
        try { fs.ftruncateSync(j.fd, start); } catch {}
        try { fs.closeSync(j.fd); } catch {}
        j.fd = undefined;
      }
      for (const m of records) replies.push({ seq: m.seq, error: failure(e) });
      continue;
    }
    let at = start;
    for (const m of records) {
      replies.push({ seq: m.seq, segment: j.segment, offset: at });
      at += m.record.byteLength;
    }
    j.size = at;
  }
}
function markDone(marks, replies) {
  const bySegment = new Map();
  for (const m of marks) {
    const path = segmentPath(m.dir, m.segment, 'done');
    if (!bySegment.has(path)) bySegment.set(path, []);
    bySegment.get(path).push(m);
  }
  for (const [path, ms] of bySegment) {
    try {
      let file = doneFiles.get(path);
      if (file === undefined) {
        // a file that existed before may have been created without its directory fsync'd: sync it once
        try { file = { fd: fs.openSync(path, 'ax', 0o600), inDir: false }; }
        catch (e) { if (e.code !== 'EEXIST') throw e; file = { fd: fs.openSync(path, 'a'), inDir: false }; }
        doneFiles.set(path, file);
      }
      writeAll(file.fd, [Buffer.from(ms.map((m) => m.id + '\n').join(''), 'latin1')]);
      if (ms.some((m) => m.durable)) {
        fs.fdatasyncSync(file.fd);
        if (!file.inDir) { syncDir(ms[0].dir); file.inDir = true; }
      }
      for (const m of ms) replies.push({ seq: m.seq });
    } catch (e) {
      for (const m of ms) replies.push({ seq: m.seq, error: failure(e) });
    }
  }
}
function closeDone(path) {
  const file = doneFiles.get(path);
  if (file === undefined) return;
  doneFiles.delete(path);
  try { fs.closeSync(file.fd); } catch {}
}
function releaseSegment(dir, segment) {
  const j = journals.get(dir);
  if (j && j.segment === segment && j.fd !== undefined) return; // still being appended to
  for (const kind of ['log', 'done']) {
    const path = segmentPath(dir, segment, kind);
    if (kind === 'done') closeDone(path);
    try { fs.unlinkSync(path); } catch {}
  }
}
function closeJournal(dir) {
  const j = journals.get(dir);
  if (j && j.fd !== undefined) { try { fs.closeSync(j.fd); } catch {} }
  journals.delete(dir);
  for (const path of [...doneFiles.keys()]) if (path.startsWith(dir + '/')) closeDone(path);
}
function run() {
  scheduled = false;
  const batch = queue;
  queue = [];
  const replies = [];
  const written = [];
  // every file of the batch written first, then each fsync'd: the first fsync's journal commit
  // carries the others' data along (ext4, xfs), so the later ones find little left to do
  for (const m of batch) {
    if (m.op !== 'write') continue;
    let fd;
    try {
      fd = fs.openSync(m.tmp, 'wx', 0o600);
      writeAll(fd, m.chunks.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
      written.push({ m, fd });
    } catch (e) {
      if (fd !== undefined) { try { fs.closeSync(fd); } catch {} try { fs.unlinkSync(m.tmp); } catch {} }
      replies.push({ seq: m.seq, error: failure(e) });
    }
  }
  const synced = new Map();
  for (const { m, fd } of written) {
    try {
      try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
      fs.renameSync(m.tmp, m.path);
      const dir = dirname(m.path);
      if (!synced.has(dir)) synced.set(dir, []);
      synced.get(dir).push(m);
    } catch (e) {
      try { fs.unlinkSync(m.tmp); } catch {}
      replies.push({ seq: m.seq, error: failure(e) });
    }
  }
  for (const [dir, writes] of synced) {
    let error;
    try {
      const fd = fs.openSync(dir, 'r');
      try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
    } catch (e) { error = failure(e); }
    for (const m of writes) {
      // not durable: take the entry back out so it is not delivered after the client was told to retry
      if (error) { try { fs.unlinkSync(m.path); } catch {} }
      replies.push(error ? { seq: m.seq, error } : { seq: m.seq });
    }
  }
  appendRecords(batch.filter((m) => m.op === 'append'), replies);
  markDone(batch.filter((m) => m.op === 'done'), replies);
  for (const m of batch) {
    if (m.op !== 'unlink') continue;
    try { fs.unlinkSync(m.path); replies.push({ seq: m.seq }); }
    catch (e) { replies.push(e.code === 'ENOENT' ? { seq: m.seq } : { seq: m.seq, error: failure(e) }); }
  }
  for (const m of batch) {
    if (m.op === 'release') releaseSegment(m.dir, m.segment);
    else if (m.op === 'close') closeJournal(m.dir);
    else continue;
    replies.push({ seq: m.seq });
  }
  parentPort.postMessage(replies);
}
`;

interface Reply {
  seq: number;
  error?: { message: string; code?: string; syscall?: string };
  /** An append's place: the segment and the offset of the record in it. */
  segment?: number;
  offset?: number;
}

export interface JournalPlace {
  readonly segment: number;
  readonly offset: number;
}

class FileWorker {
  private worker: Worker | undefined;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (reply: Reply) => void; reject: (err: Error) => void }>();
  private readonly outbox = new PostBatch<Record<string, unknown>>((batch) => this.worker?.postMessage(batch));

  /** Writes the chunks to `tmp` (created exclusively, mode 0600), renames it to `path` and fsyncs the directory. */
  async writeEntry(tmp: string, path: string, chunks: Buffer[]): Promise<void> {
    await this.request({ op: 'write', tmp, path, chunks });
  }

  /** Deletes a file; a file that is already gone is not an error. */
  async unlink(path: string): Promise<void> {
    await this.request({ op: 'unlink', path });
  }

  /**
   * Appends a journal record to the journal directory's current segment and resolves once it is
   * durable. The first segment this process opens there is `firstSegment` (or the next free
   * number); a new one is opened once the current one holds `segmentBytes` or after an error.
   */
  async append(dir: string, record: Buffer, firstSegment: number, segmentBytes: number): Promise<JournalPlace> {
    const reply = await this.request({ op: 'append', dir, record, firstSegment, segmentBytes });
    return { segment: reply.segment!, offset: reply.offset! };
  }

  /** Records that an entry of a segment is gone (delivered, deleted, or moved to a file of its own); `durable` fdatasyncs it. */
  async markDone(dir: string, segment: number, id: string, durable: boolean): Promise<void> {
    await this.request({ op: 'done', dir, segment, id, durable });
  }

  /** Deletes a segment none of whose entries is left (not the one being appended to). */
  async release(dir: string, segment: number): Promise<void> {
    await this.request({ op: 'release', dir, segment });
  }

  /** Closes the journal directory's files: the next append opens a new segment. */
  async closeJournal(dir: string): Promise<void> {
    if (this.worker) await this.request({ op: 'close', dir });
  }

  private request(body: Record<string, unknown>): Promise<Reply> {
    const worker = this.start();
    const seq = ++this.seq;
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      // only while something is asked may the worker keep the process alive (a CLI exits when done)
      if (this.waiting.size === 1) worker.ref();
      this.outbox.push({ ...body, seq });
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true, name: 'sendas queue files' });
    worker.unref();
    worker.on('message', (replies: Reply[]) => {
      for (const reply of replies) this.settle(reply.seq, reply);
    });
    const fail = (err: Error) => {
      // the worker is gone: whatever it was asked is unknown, so it failed (the clients get a 451 and retry)
      if (this.worker === worker) this.worker = undefined;
      this.outbox.clear();
      const error = { message: `queue file worker stopped: ${err.message}` };
      for (const seq of [...this.waiting.keys()]) this.settle(seq, { seq, error });
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    this.worker = worker;
    return worker;
  }

  private settle(seq: number, reply: Reply): void {
    const waiter = this.waiting.get(seq);
    if (!waiter) return;
    this.waiting.delete(seq);
    if (this.waiting.size === 0) this.worker?.unref();
    if (reply.error) waiter.reject(toError(reply.error));
    else waiter.resolve(reply);
  }
}

function toError(e: NonNullable<Reply['error']>): Error {
  return Object.assign(new Error(e.message), { code: e.code, syscall: e.syscall });
}

/** One per process: every queue store shares it (the CLI and the tests open several). */
export const fileWorker = new FileWorker();
