import { spawnSync } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DoneMarks } from '../../src/queue/file-done-marks.js';
import { segmentPath } from '../../src/queue/file-names.js';
import { fileWorker } from '../../src/queue/file-worker.js';
import { Journal } from '../../src/queue/journal.js';
import { ThreadExitedError } from '../../src/threads/thread-exited.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sendas-files-'));
  await mkdir(join(dir, 'tmp'));
  await mkdir(join(dir, 'active'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the queue file worker', () => {
  it('writes an entry byte for byte, mode 0600, under its final name; nothing left in tmp/', async () => {
    const bytes = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 31) & 0xff));
    // a view into a larger buffer: only the view's bytes are written
    const view = Buffer.concat([Buffer.alloc(100, 1), bytes, Buffer.alloc(100, 2)]).subarray(100, 5100);
    await fileWorker.writeEntry(join(dir, 'tmp', 'A.eml'), join(dir, 'active', 'A.eml'), [view]);
    expect(await readFile(join(dir, 'active', 'A.eml'))).toEqual(bytes);
    expect((await stat(join(dir, 'active', 'A.eml'))).mode & 0o777).toBe(0o600);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
  });

  it('200 writes asked at once all land, each whole (they share directory fsyncs)', async () => {
    await Promise.all(
      Array.from({ length: 200 }, (_, i) => fileWorker.writeEntry(join(dir, 'tmp', `M${i}.eml`), join(dir, 'active', `M${i}.eml`), [Buffer.from(`message ${i}\r\n`)])),
    );
    const names = await readdir(join(dir, 'active'));
    expect(names).toHaveLength(200);
    expect((await readFile(join(dir, 'active', 'M137.eml'), 'utf8'))).toBe('message 137\r\n');
  });

  it('a write that cannot be made fails with the system error and leaves nothing behind; the next one works', async () => {
    await writeFile(join(dir, 'tmp', 'B.eml'), 'someone else');
    await expect(fileWorker.writeEntry(join(dir, 'tmp', 'B.eml'), join(dir, 'active', 'B.eml'), [Buffer.from('x')])).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(fileWorker.writeEntry(join(dir, 'nowhere', 'C.eml'), join(dir, 'active', 'C.eml'), [Buffer.from('x')])).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(join(dir, 'active'))).toEqual([]);
    await fileWorker.writeEntry(join(dir, 'tmp', 'D.eml'), join(dir, 'active', 'D.eml'), [Buffer.from('x')]);
    expect(await readdir(join(dir, 'active'))).toEqual(['D.eml']);
  });

  it('a worker that dies fails what it was asked (the client gets a 451 and sends again); the next request starts a new one', async () => {
    await fileWorker.writeEntry(join(dir, 'tmp', 'warm-up.eml'), join(dir, 'warm-up.eml'), [Buffer.from('x')]);
    // stopped before it could read the request: the request is answered by the thread's exit
    void fileWorker.terminate();
    const pending = fileWorker.writeEntry(join(dir, 'tmp', 'F.eml'), join(dir, 'active', 'F.eml'), [Buffer.from('lost')]);
    await expect(pending).rejects.toBeInstanceOf(ThreadExitedError);
    await expect(pending).rejects.toThrow(/the sendas queue files thread stopped/);
    expect(await readdir(join(dir, 'active'))).toEqual([]);
    await fileWorker.writeEntry(join(dir, 'tmp', 'G.eml'), join(dir, 'active', 'G.eml'), [Buffer.from('after')]);
    expect(await readFile(join(dir, 'active', 'G.eml'), 'utf8')).toBe('after');
  });

  it('does not keep a process alive once nothing is asked of it', () => {
    const src = fileURLToPath(new URL('../../src/queue/file-worker.ts', import.meta.url));
    const script = `import { fileWorker } from ${JSON.stringify(src)};
      await fileWorker.writeEntry(${JSON.stringify(join(dir, 'tmp', 'alive.eml'))}, ${JSON.stringify(join(dir, 'alive.eml'))}, [Buffer.from('x')]);
      console.log('done');`;
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
    expect(run.stdout.trim()).toBe('done');
    expect(run.status).toBe(0);
  });
});

describe('the queue file worker: journal appends', () => {
  const journal = () => join(dir, 'journal');
  beforeEach(async () => {
    await mkdir(journal());
  });
  afterEach(async () => {
    await fileWorker.closeJournal(journal());
  });

  it('appends asked at once land back to back in one segment, at the offsets given, mode 0600', async () => {
    const records = Array.from({ length: 100 }, (_, i) => Buffer.from(`record ${i};`));
    const places = await Promise.all(records.map((r) => fileWorker.append(journal(), r, 7, 1 << 20)));
    const segment = await readFile(join(journal(), '0000000007.log'));
    expect(segment.length).toBe(records.reduce((n, r) => n + r.length, 0));
    for (const [i, place] of places.entries()) {
      expect(place.segment).toBe(7);
      expect(segment.subarray(place.offset, place.offset + records[i]!.length)).toEqual(records[i]);
    }
    expect((await stat(join(journal(), '0000000007.log'))).mode & 0o777).toBe(0o600);
  });

  it('a segment past its size is followed by the next; an existing segment is never appended to', async () => {
    await writeFile(join(journal(), '0000000001.log'), 'from an earlier run');
    const first = await fileWorker.append(journal(), Buffer.from('one'), 1, 2);
    const second = await fileWorker.append(journal(), Buffer.from('two'), 1, 2);
    expect([first.segment, second.segment]).toEqual([2, 3]);
    expect(await readFile(join(journal(), '0000000001.log'), 'utf8')).toBe('from an earlier run');
  });

  it('done marks go to the segment\'s .done (a delivered one from the main thread, a durable one from the worker); release deletes both files; a failed append is answered with its error and the next opens a new segment', async () => {
    const { segment } = await fileWorker.append(journal(), Buffer.from('x'), 1, 1 << 20);
    const marks = new DoneMarks();
    await marks.mark(segmentPath(journal(), segment, 'done'), 'AAAAAAAAAAAA');
    marks.forget(segmentPath(journal(), segment, 'done'));
    await fileWorker.markDone(journal(), segment, 'BBBBBBBBBBBB');
    expect(await readFile(join(journal(), '0000000001.done'), 'utf8')).toBe('AAAAAAAAAAAA\nBBBBBBBBBBBB\n');
    expect((await stat(join(journal(), '0000000001.done'))).mode & 0o777).toBe(0o600);
    // the segment being appended to is kept
    await fileWorker.release(journal(), 1);
    expect(await readdir(journal())).toContain('0000000001.log');
    await fileWorker.closeJournal(journal());
    await fileWorker.release(journal(), 1);
    expect(await readdir(journal())).toEqual([]);

    await rm(journal(), { recursive: true });
    await expect(fileWorker.append(journal(), Buffer.from('y'), 1, 1 << 20)).rejects.toMatchObject({ code: 'ENOENT' });
    await mkdir(journal());
    expect((await fileWorker.append(journal(), Buffer.from('z'), 1, 1 << 20)).segment).toBe(2);
  });
});

describe('the delivered mark', () => {
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
  const journal = () => join(dir, 'journal');
  beforeEach(async () => {
    await mkdir(journal());
  });
  afterEach(async () => {
    await fileWorker.closeJournal(journal());
  });

  it('reaches the .done file within the turn it is asked in, while the file worker is stuck in a batch with an acceptance behind it', async () => {
    const j = new Journal(journal());
    await j.load(() => false, false);
    await j.append('AAAAAAAAAAAA', Buffer.from('{}'), [Buffer.from('delivered\r\n')], 11);
    // The worker is held inside a batch, as by a slow fdatasync: a durable mark whose .done is a
    // FIFO blocks in open() until a reader comes. The next acceptance waits behind that batch.
    const fifo = segmentPath(journal(), 99, 'done');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const stuck = fileWorker.markDone(journal(), 99, 'ZZZZZZZZZZZZ').catch(() => undefined);
    let accepted = false;
    const acceptance = j.append('BBBBBBBBBBBB', Buffer.from('{}'), [Buffer.from('accepted\r\n')], 10).then(() => (accepted = true));
    const delivered = j.done('AAAAAAAAAAAA', false);
    try {
      await Promise.race([delivered, turn().then(turn)]);
      const done = segmentPath(journal(), 1, 'done');
      expect(existsSync(done) && readFileSync(done, 'latin1')).toBe('AAAAAAAAAAAA\n');
      expect(accepted).toBe(false);
      await delivered;
    } finally {
      // a reader lets the worker's open() return (its fdatasync of a FIFO then fails the stuck mark)
      const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      await stuck;
      await acceptance;
      closeSync(reader);
    }
    expect(accepted).toBe(true);
  });
});
