import { readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** A worker thread's module, and the Node options it needs to be loaded. */
export interface WorkerModule {
  readonly url: URL;
  readonly execArgv?: string[];
}

/**
 * The worker module `name` beside the module at `base` (its import.meta.url), with the same
 * extension: compiled, dist/…/name.js, loaded as it is. From the TypeScript sources (vitest, tsx),
 * src/…/name.ts, its compiled twin in dist/ when that build is newer than every source file (as
 * `npm test` leaves it), else the source with tsx's hooks registered in the worker first
 * (tsx-register.mjs, a file that is never compiled: on Node 20, `--import tsx` registers them in
 * the main thread only).
 *
 * Why the twin: registering tsx in a worker costs a quarter of a second of CPU at every start,
 * and the tests start relays by the hundred, each with up to three threads. Only plain data
 * crosses a thread's boundary, so the compiled twin of the same sources is the same worker.
 */
export function workerModule(base: string, name: string): WorkerModule {
  const extension = extname(new URL(base).pathname);
  const url = new URL(`./${name}${extension}`, base);
  if (extension !== '.ts') return { url };
  const twin = compiledTwin(url);
  // plain JavaScript: none of this process's options (--import tsx, --input-type) apply to it
  if (twin) return { url: twin, execArgv: [] };
  return { url, execArgv: ['--import', new URL('./tsx-register.mjs', import.meta.url).href] };
}

/** src/a/b.ts → dist/a/b.js of the same tree, when dist/ was built after the last change to src/. */
function compiledTwin(source: URL): URL | undefined {
  const path = fileURLToPath(source);
  const at = path.lastIndexOf('/src/');
  if (at < 0) return undefined;
  const root = path.slice(0, at);
  const twin = `${root}/dist/${path.slice(at + 5).replace(/\.ts$/, '.js')}`;
  try {
    return statSync(twin).mtimeMs >= newestSource(join(root, 'src')) ? pathToFileURL(twin) : undefined;
  } catch {
    return undefined; // not built
  }
}

const newest = new Map<string, number>();

/** The latest change under a source tree (once per process: a build during a run is not waited for). */
export function newestSource(dir: string): number {
  let latest = newest.get(dir);
  if (latest !== undefined) return latest;
  latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) latest = Math.max(latest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  newest.set(dir, latest);
  return latest;
}
