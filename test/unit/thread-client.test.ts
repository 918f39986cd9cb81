import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { ThreadClient } from '../../src/threads/client.js';
import { workerModule } from '../../src/threads/module.js';
import { ThreadExitedError } from '../../src/threads/thread-exited.js';
import type { TestProtocol } from './thread-client-worker.js';

const module = workerModule(import.meta.url, 'thread-client-worker');
const clients: ThreadClient<TestProtocol, number>[] = [];
const client = () => {
  const c = new ThreadClient<TestProtocol, number>({ name: 'test', module });
  clients.push(c);
  return c;
};
const roots: string[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

describe('the thread client', () => {
  it('loads a TypeScript worker module under vitest (tsx registered in the worker); from dist/ the same call names the .js beside', () => {
    expect(module.url.pathname).toMatch(/\/test\/unit\/thread-client-worker\.ts$/);
    expect(module.execArgv).toEqual(['--import', expect.stringMatching(/\/src\/threads\/tsx-register\.mjs$/)]);
    const compiled = workerModule('file:///opt/sendas/dist/queue/file-worker.js', 'file-worker-thread');
    expect(compiled).toEqual({ url: new URL('file:///opt/sendas/dist/queue/file-worker-thread.js') });
  });

  it('from the sources, a worker under src/ is its compiled twin in dist/ when that build is newer than every source file, else the source with tsx', () => {
    const tree = (distNewer: boolean) => {
      const root = mkdtempSync(join(tmpdir(), 'sendas-twin-'));
      roots.push(root);
      mkdirSync(join(root, 'src/queue'), { recursive: true });
      mkdirSync(join(root, 'dist/queue'), { recursive: true });
      writeFileSync(join(root, 'src/queue/file-worker-thread.ts'), '');
      writeFileSync(join(root, 'src/queue/other.ts'), '');
      writeFileSync(join(root, 'dist/queue/file-worker-thread.js'), '');
      // an edit after the build: one source file newer than dist/
      const [src, dist] = distNewer ? [1_000, 2_000] : [3_000, 2_000];
      utimesSync(join(root, 'src/queue/other.ts'), src, src);
      utimesSync(join(root, 'src/queue/file-worker-thread.ts'), 1_000, 1_000);
      utimesSync(join(root, 'dist/queue/file-worker-thread.js'), dist, dist);
      return workerModule(pathToFileURL(join(root, 'src/queue/file-worker.ts')).href, 'file-worker-thread');
    };
    const built = tree(true);
    expect(built).toEqual({ url: pathToFileURL(join(roots.at(-1)!, 'dist/queue/file-worker-thread.js')), execArgv: [] });
    const edited = tree(false);
    expect(edited.url.pathname).toBe(join(roots.at(-1)!, 'src/queue/file-worker-thread.ts'));
    expect(edited.execArgv?.[0]).toBe('--import');
  });

  it('requests of one turn go in one batch, each answered by its own id; the next turn makes a new batch', async () => {
    const c = client();
    await c.ready();
    const first = await Promise.all(['a', 'b', 'c'].map((value) => c.request('echo', { value })));
    expect(first.map((r) => [r.value, r.batch])).toEqual([['a', 3], ['b', 3], ['c', 3]]);
    expect((await c.request('echo', { value: 'd' })).batch).toBe(1);
  });

  it('a failure comes back as an Error carrying the fields sent', async () => {
    await expect(client().request('fail', { code: 'EXYZ' })).rejects.toMatchObject({ message: 'failed with EXYZ', code: 'EXYZ' });
  });

  it('notify is not answered and starts no thread; the status comes with the next batch of replies', async () => {
    const c = client();
    c.notify('count', {});
    expect(c.running).toBe(false);
    await c.ready();
    c.notify('count', {});
    c.notify('count', {});
    await c.request('echo', { value: 'x' });
    expect(c.status).toBe(2);
  });

  it('a thread that exits fails every waiter with ThreadExitedError; the next request starts a new thread', async () => {
    const c = client();
    const before = await c.request('echo', { value: 'x' });
    const waiting = [c.request('hang', {}), c.request('hang', {}), c.request('exit', { code: 3 })];
    for (const w of waiting) await expect(w).rejects.toEqual(new ThreadExitedError('test', 'exit code 3'));
    expect(c.running).toBe(false);
    expect(c.status).toBeUndefined();
    const after = await c.request('echo', { value: 'y' });
    expect(after.threadId).not.toBe(before.threadId);
  });

  it('close lets the thread answer what was asked before, fails what it never answers, and a later request starts a new thread', async () => {
    const c = client();
    const asked = c.request('echo', { value: 'before close' });
    const hanging = c.request('hang', {});
    const closed = c.close();
    await expect(asked).resolves.toMatchObject({ value: 'before close' });
    await expect(hanging).rejects.toBeInstanceOf(ThreadExitedError);
    await closed;
    await expect(c.request('echo', { value: 'again' })).resolves.toMatchObject({ value: 'again' });
  });

  it('keeps a process alive while it waits for ready() or a reply, and not once nothing is asked', () => {
    const src = (path: string) => JSON.stringify(fileURLToPath(new URL(path, import.meta.url)));
    const script = `import { ThreadClient } from ${src('../../src/threads/client.ts')};
      import { workerModule } from ${src('../../src/threads/module.ts')};
      const c = new ThreadClient({ name: 'child', module: workerModule(${JSON.stringify(import.meta.url)}, 'thread-client-worker') });
      await c.ready();
      console.log('ready');
      console.log((await c.request('echo', { value: 'answered' })).value);`;
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
    expect(run.stdout.trim().split('\n')).toEqual(['ready', 'answered']);
    expect(run.status).toBe(0);
  });
});
