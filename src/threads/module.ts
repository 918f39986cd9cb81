import { extname } from 'node:path';

/** A worker thread's module, and the Node options it needs to be loaded. */
export interface WorkerModule {
  readonly url: URL;
  readonly execArgv?: string[];
}

/**
 * The worker module `name` beside the module at `base` (its import.meta.url), with the same
 * extension: compiled, dist/…/name.js, loaded as it is; from the TypeScript sources (vitest, tsx),
 * src/…/name.ts, loaded with tsx's hooks registered in the worker first (tsx-register.mjs, a file
 * that is never compiled: on Node 20, `--import tsx` registers them in the main thread only).
 */
export function workerModule(base: string, name: string): WorkerModule {
  const extension = extname(new URL(base).pathname);
  const url = new URL(`./${name}${extension}`, base);
  if (extension !== '.ts') return { url };
  return { url, execArgv: ['--import', new URL('./tsx-register.mjs', import.meta.url).href] };
}
