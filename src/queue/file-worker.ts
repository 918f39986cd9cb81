import { Worker } from 'node:worker_threads';

/**
 * The queue's per-message file work — write a small entry durably, delete a delivered one — done
 * by one worker thread with plain synchronous system calls, off the relay's main thread.
 *
 * Why: profiles of the benchmark showed the main thread, which runs every SMTP session, spending
 * a fifth of its time dispatching these calls to libuv's thread pool one by one (open, write,
 * fsync, close, rename, the directory's fsync, unlink), each a round trip through the event loop.
 * Here a message is one postMessage each way. Requests that arrive while the worker is busy form
 * the next batch: its entries are all written, then each is fsync'd and renamed into place, then
 * each directory they went to is fsync'd once for all of them — group commit. Every request is
 * answered only after that, so a 250 still means "on disk". Deletions wait behind the batch's
 * writes, which is why the queue runner does not hold a delivery slot while one is pending.
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
parentPort.on('message', (m) => {
  queue.push(m);
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
  for (const m of batch) {
    if (m.op !== 'unlink') continue;
    try { fs.unlinkSync(m.path); replies.push({ seq: m.seq }); }
    catch (e) { replies.push(e.code === 'ENOENT' ? { seq: m.seq } : { seq: m.seq, error: failure(e) }); }
  }
  parentPort.postMessage(replies);
}
`;

interface Reply {
  seq: number;
  error?: { message: string; code?: string; syscall?: string };
}

class FileWorker {
  private worker: Worker | undefined;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();

  /** Writes the chunks to `tmp` (created exclusively, mode 0600), renames it to `path` and fsyncs the directory. */
  writeEntry(tmp: string, path: string, chunks: Buffer[]): Promise<void> {
    return this.request({ op: 'write', tmp, path, chunks });
  }

  /** Deletes a file; a file that is already gone is not an error. */
  unlink(path: string): Promise<void> {
    return this.request({ op: 'unlink', path });
  }

  private request(body: Record<string, unknown>): Promise<void> {
    const worker = this.start();
    const seq = ++this.seq;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      // only while something is asked may the worker keep the process alive (a CLI exits when done)
      if (this.waiting.size === 1) worker.ref();
      worker.postMessage({ ...body, seq });
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true, name: 'sendas queue files' });
    worker.unref();
    worker.on('message', (replies: Reply[]) => {
      for (const reply of replies) this.settle(reply.seq, reply.error ? toError(reply.error) : undefined);
    });
    const fail = (err: Error) => {
      // the worker is gone: whatever it was asked is unknown, so it failed (the clients get a 451 and retry)
      if (this.worker === worker) this.worker = undefined;
      for (const seq of [...this.waiting.keys()]) this.settle(seq, new Error(`queue file worker stopped: ${err.message}`));
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    this.worker = worker;
    return worker;
  }

  private settle(seq: number, err: Error | undefined): void {
    const waiter = this.waiting.get(seq);
    if (!waiter) return;
    this.waiting.delete(seq);
    if (this.waiting.size === 0) this.worker?.unref();
    if (err) waiter.reject(err);
    else waiter.resolve();
  }
}

function toError(e: NonNullable<Reply['error']>): Error {
  return Object.assign(new Error(e.message), { code: e.code, syscall: e.syscall });
}

/** One per process: every queue store shares it (the CLI and the tests open several). */
export const fileWorker = new FileWorker();
