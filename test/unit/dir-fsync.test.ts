import { mkdtempSync, rmSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fsyncDirSync, openDirForSync, type DirFsyncDeps } from '../../src/queue/dir-fsync.js';
import { DirSync } from '../../src/queue/dir-sync.js';

const tmp = mkdtempSync(join(tmpdir(), 'sendas-dir-fsync-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function systemError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

/** A platform whose open and fsync are recorded and fail as told. */
function platform(name: NodeJS.Platform, fail: { open?: string; fsync?: string } = {}) {
  const calls: string[] = [];
  const handle = {
    sync: async () => {
      calls.push('fsync');
      if (fail.fsync) throw systemError(fail.fsync);
    },
    close: async () => void calls.push('close'),
  } as unknown as FileHandle;
  const deps: DirFsyncDeps = {
    platform: name,
    openSync: (path) => {
      calls.push(`open ${path}`);
      if (fail.open) throw systemError(fail.open);
      return 42;
    },
    fsyncSync: () => {
      calls.push('fsync');
      if (fail.fsync) throw systemError(fail.fsync);
    },
    closeSync: () => void calls.push('close'),
    open: async (path) => {
      calls.push(`open ${path}`);
      if (fail.open) throw systemError(fail.open);
      return handle;
    },
  };
  return { deps, calls };
}

describe('directory fsync', () => {
  it('is a no-op on Windows: the directory is never opened', async () => {
    const { deps, calls } = platform('win32', { open: 'EISDIR' });
    expect(() => fsyncDirSync('C:\\queue\\active', deps)).not.toThrow();
    expect(await openDirForSync('C:\\queue\\active', deps)).toBeUndefined();
    const sync = new DirSync('C:\\queue\\active', deps);
    await sync.sync();
    await sync.sync();
    expect(calls).toEqual([]);
  });

  it.each(['EISDIR', 'EPERM', 'EINVAL'])('tolerates %s from opening the directory (and stops trying)', async (code) => {
    const { deps, calls } = platform('linux', { open: code });
    expect(() => fsyncDirSync('/q', deps)).not.toThrow();
    const sync = new DirSync('/q', deps);
    await expect(sync.sync()).resolves.toBeUndefined();
    await expect(sync.sync()).resolves.toBeUndefined();
    // once from fsyncDirSync, once from the DirSync: the second sync() knows it can't be done
    expect(calls).toEqual(['open /q', 'open /q']);
  });

  it('tolerates EINVAL from fsync (a file system without directory fsync)', async () => {
    const { deps, calls } = platform('linux', { fsync: 'EINVAL' });
    expect(() => fsyncDirSync('/q', deps)).not.toThrow();
    await expect(new DirSync('/q', deps).sync()).resolves.toBeUndefined();
    expect(calls).toEqual(['open /q', 'fsync', 'close', 'open /q', 'fsync']);
  });

  it('still fails on a real disk error or a missing directory', async () => {
    expect(() => fsyncDirSync('/q', platform('linux', { fsync: 'EIO' }).deps)).toThrow(/EIO/);
    expect(() => fsyncDirSync('/q', platform('linux', { open: 'ENOENT' }).deps)).toThrow(/ENOENT/);
    await expect(new DirSync('/q', platform('linux', { fsync: 'EIO' }).deps).sync()).rejects.toThrow(/EIO/);
    await expect(new DirSync('/q', platform('linux', { open: 'ENOENT' }).deps).sync()).rejects.toThrow(/ENOENT/);
  });

  it('syncs a real directory here', async () => {
    expect(() => fsyncDirSync(tmp)).not.toThrow();
    const sync = new DirSync(tmp);
    await sync.sync();
    expect(sync.count).toBe(1);
    await sync.close();
  });
});
