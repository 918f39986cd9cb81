/**
 * The queue's file worker thread (its client and the reasons for it: file-worker.ts). Plain
 * synchronous system calls; the requests that arrive while a batch runs form the next one (group
 * commit). Within a batch: entry files are all written, then each is fsync'd and renamed, then
 * each directory is fsync'd once; then the journal appends (one write and one fdatasync per
 * journal directory), the durable done marks, the deletions. Every reply is posted only after all
 * of that, so a 250 still means "on disk", and a durable done mark asked after an entry file's
 * write was answered comes after that file is durable.
 */
import { closeSync, fdatasyncSync, fsyncSync, ftruncateSync, openSync, renameSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { ThreadServer, systemError } from '../threads/server.js';
import type { Request } from '../threads/protocol.js';
import type { FileProtocol } from './file-protocol.js';
import { segmentPath } from './file-names.js';
import { writeAllSync } from './file-write.js';
import { fsyncDirSync } from './dir-fsync.js';

type FileRequest = Request<FileProtocol>;
type OpRequest<K extends FileRequest['op']> = Extract<FileRequest, { op: K }>;

let queue: FileRequest[] = [];
let scheduled = false;

const server = new ThreadServer<FileProtocol>({
  receive(requests) {
    for (const r of requests) queue.push(r);
    if (!scheduled) {
      scheduled = true;
      setImmediate(run);
    }
  },
});

const asBuffer = (c: Uint8Array) => Buffer.from(c.buffer, c.byteOffset, c.byteLength);

// Per journal directory, the segment being appended to. A segment is created exclusively; after
// an error it is left as it is (its tail cut back) and the next append opens a new one, so a
// segment's damaged part can only be at its end.
const journals = new Map<string, { segment: number; fd: number | undefined; size: number; fresh: boolean }>();
/** Open .done files; `inDir` once the directory holding it has been fsync'd since it was created. */
const doneFiles = new Map<string, { fd: number; inDir: boolean }>();

function syncDir(dir: string): void {
  fsyncDirSync(dir);
}

function currentSegment(m: OpRequest<'append'>['body']) {
  let j = journals.get(m.dir);
  if (j && j.fd !== undefined && j.size < m.segmentBytes) return j;
  let segment = j ? j.segment + 1 : m.firstSegment;
  if (j && j.fd !== undefined) closeSync(j.fd);
  for (;;) {
    try {
      const fd = openSync(segmentPath(m.dir, segment, 'log'), 'ax', 0o600);
      j = { segment, fd, size: 0, fresh: true };
      journals.set(m.dir, j);
      return j;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        journals.set(m.dir, { segment, fd: undefined, size: 0, fresh: false });
        throw e;
      }
      segment++;
    }
  }
}

function appendRecords(appends: OpRequest<'append'>[]): void {
  for (const records of groupBy(appends, (m) => m.body.dir).values()) {
    let j: ReturnType<typeof currentSegment> | undefined;
    let start = 0;
    try {
      j = currentSegment(records[0]!.body);
      start = j.size;
      writeAllSync(j.fd!, records.map((m) => asBuffer(m.body.record)));
      // one fdatasync makes every record of the batch durable, with the file's new length
      fdatasyncSync(j.fd!);
      if (j.fresh) {
        syncDir(records[0]!.body.dir);
        j.fresh = false;
      }
    } catch (e) {
      if (j && j.fd !== undefined) {
        try {
          ftruncateSync(j.fd, start);
        } catch {}
        try {
          closeSync(j.fd);
        } catch {}
        j.fd = undefined;
      }
      for (const m of records) server.fail(m, systemError(e));
      continue;
    }
    let at = start;
    for (const m of records) {
      server.reply(m, { segment: j.segment, offset: at });
      at += m.body.record.byteLength;
    }
    j.size = at;
  }
}

function markDone(marks: OpRequest<'done'>[]): void {
  for (const [path, ms] of groupBy(marks, (m) => segmentPath(m.body.dir, m.body.segment, 'done'))) {
    try {
      let file = doneFiles.get(path);
      if (file === undefined) {
        // a file that existed before (created by a delivered mark, file-done-marks.ts) may not have its directory fsync'd yet: sync it once
        try {
          file = { fd: openSync(path, 'ax', 0o600), inDir: false };
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
          file = { fd: openSync(path, 'a'), inDir: false };
        }
        doneFiles.set(path, file);
      }
      writeAllSync(file.fd, [Buffer.from(ms.map((m) => `${m.body.id}\n`).join(''), 'latin1')]);
      fdatasyncSync(file.fd);
      if (!file.inDir) {
        syncDir(ms[0]!.body.dir);
        file.inDir = true;
      }
      for (const m of ms) server.reply(m, undefined);
    } catch (e) {
      for (const m of ms) server.fail(m, systemError(e));
    }
  }
}

function closeDone(path: string): void {
  const file = doneFiles.get(path);
  if (file === undefined) return;
  doneFiles.delete(path);
  try {
    closeSync(file.fd);
  } catch {}
}

function releaseSegment(dir: string, segment: number): void {
  const j = journals.get(dir);
  if (j && j.segment === segment && j.fd !== undefined) return; // still being appended to
  for (const kind of ['log', 'done'] as const) {
    const path = segmentPath(dir, segment, kind);
    if (kind === 'done') closeDone(path);
    try {
      unlinkSync(path);
    } catch {}
  }
}

function closeJournal(dir: string): void {
  const j = journals.get(dir);
  if (j && j.fd !== undefined) {
    try {
      closeSync(j.fd);
    } catch {}
  }
  journals.delete(dir);
  for (const path of [...doneFiles.keys()]) if (path.startsWith(`${dir}/`)) closeDone(path);
}

function writeEntries(writes: OpRequest<'write'>[]): void {
  const written: { m: OpRequest<'write'>; fd: number }[] = [];
  // every file of the batch written first, then each fsync'd: the first fsync's journal commit
  // carries the others' data along (ext4, xfs), so the later ones find little left to do
  for (const m of writes) {
    let fd: number | undefined;
    try {
      fd = openSync(m.body.tmp, 'wx', 0o600);
      writeAllSync(fd, m.body.chunks.map(asBuffer));
      written.push({ m, fd });
    } catch (e) {
      if (fd !== undefined) {
        try {
          closeSync(fd);
        } catch {}
        try {
          unlinkSync(m.body.tmp);
        } catch {}
      }
      server.fail(m, systemError(e));
    }
  }
  const renamed: OpRequest<'write'>[] = [];
  for (const { m, fd } of written) {
    try {
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(m.body.tmp, m.body.path);
      renamed.push(m);
    } catch (e) {
      try {
        unlinkSync(m.body.tmp);
      } catch {}
      server.fail(m, systemError(e));
    }
  }
  for (const [dir, ms] of groupBy(renamed, (m) => dirname(m.body.path))) {
    let error: unknown;
    try {
      syncDir(dir);
    } catch (e) {
      error = e;
    }
    for (const m of ms) {
      if (error === undefined) {
        server.reply(m, undefined);
        continue;
      }
      // not durable: take the entry back out so it is not delivered after the client was told to retry
      try {
        unlinkSync(m.body.path);
      } catch {}
      server.fail(m, systemError(error));
    }
  }
}

/** Map.groupBy, which Node 20 does not have: groups in first-seen order, each in arrival order. */
function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}

function run(): void {
  scheduled = false;
  const batch = queue;
  queue = [];
  const of = <K extends FileRequest['op']>(op: K) => batch.filter((m): m is OpRequest<K> => m.op === op);
  writeEntries(of('write'));
  appendRecords(of('append'));
  markDone(of('done'));
  for (const m of batch) {
    if (m.op === 'release') releaseSegment(m.body.dir, m.body.segment);
    else if (m.op === 'close') closeJournal(m.body.dir);
    else continue;
    server.reply(m, undefined);
  }
  server.flush();
}
