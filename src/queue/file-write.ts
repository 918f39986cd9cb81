import { writev, writevSync } from 'node:fs';

/** Writes all of `chunks` at the descriptor's position, in as many writev calls as it takes. */
export function writeAllSync(fd: number, chunks: readonly Uint8Array[]): void {
  for (let rest = chunks; rest.length > 0; ) rest = unwritten(rest, writevSync(fd, rest));
}

/** writeAllSync through libuv's thread pool (the main thread's large entries). */
export async function writeAll(fd: number, chunks: readonly Uint8Array[]): Promise<void> {
  for (let rest = chunks; rest.length > 0; ) rest = unwritten(rest, await writevAsync(fd, rest));
}

/** What is left after a writev wrote `written` bytes: all of it, except after a short write (a full disk, a signal). */
function unwritten(chunks: readonly Uint8Array[], written: number): readonly Uint8Array[] {
  const rest: Uint8Array[] = [];
  for (const c of chunks) {
    if (written >= c.length) {
      written -= c.length;
      continue;
    }
    rest.push(written > 0 ? c.subarray(written) : c);
    written = 0;
  }
  return rest;
}

function writevAsync(fd: number, chunks: readonly Uint8Array[]): Promise<number> {
  return new Promise((resolve, reject) => writev(fd, chunks as Uint8Array[], (err, written) => (err ? reject(err) : resolve(written))));
}
