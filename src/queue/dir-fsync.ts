import { closeSync, fsyncSync, openSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/**
 * A rename is durable on Linux and macOS once its directory is fsync'd. Windows cannot open a
 * directory as a file (EISDIR, EPERM) and NTFS journals renames itself, and some file systems
 * refuse fsync on a directory (EINVAL): there, directory sync is skipped instead of failing the
 * write that needed it. Every directory fsync in sendas goes through here.
 */
export interface DirFsyncDeps {
  readonly platform: NodeJS.Platform;
  readonly openSync: (path: string, flags: string) => number;
  readonly fsyncSync: (fd: number) => void;
  readonly closeSync: (fd: number) => void;
  readonly open: (path: string, flags: string) => Promise<FileHandle>;
}

const NODE: DirFsyncDeps = { platform: process.platform, openSync, fsyncSync, closeSync, open };

/** Errors that mean "this platform or file system cannot sync a directory", not "the disk failed". */
const UNSUPPORTED = new Set(['EISDIR', 'EPERM', 'EINVAL']);

export function dirSyncUnsupported(err: unknown): boolean {
  return UNSUPPORTED.has((err as NodeJS.ErrnoException | undefined)?.code ?? '');
}

/** fsync of a directory, synchronously (the file worker thread). */
export function fsyncDirSync(dir: string, deps: DirFsyncDeps = NODE): void {
  if (deps.platform === 'win32') return;
  let fd: number;
  try {
    fd = deps.openSync(dir, 'r');
  } catch (err) {
    if (dirSyncUnsupported(err)) return;
    throw err;
  }
  try {
    deps.fsyncSync(fd);
  } catch (err) {
    if (!dirSyncUnsupported(err)) throw err;
  } finally {
    deps.closeSync(fd);
  }
}

/** A directory opened to be fsync'd again and again, or undefined where that cannot be done. */
export async function openDirForSync(dir: string, deps: DirFsyncDeps = NODE): Promise<FileHandle | undefined> {
  if (deps.platform === 'win32') return undefined;
  try {
    return await deps.open(dir, 'r');
  } catch (err) {
    if (dirSyncUnsupported(err)) return undefined;
    throw err;
  }
}

/** fsync of an opened directory; false when the file system refuses it (nothing to retry). */
export async function fsyncDirHandle(fh: FileHandle): Promise<boolean> {
  try {
    await fh.sync();
    return true;
  } catch (err) {
    if (dirSyncUnsupported(err)) return false;
    throw err;
  }
}
