import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { newestSource } from '../../src/threads/module.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface ProcessResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end; a non-zero exit is a result, a kill or a spawn failure an error. */
export function runProcess(cmd: string, args: readonly string[], opts: { cwd: string; env: NodeJS.ProcessEnv }, timeout = 30_000): Promise<ProcessResult> {
  return new Promise((done, fail) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env, timeout, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        fail(new Error(`${cmd} ${args.join(' ')} did not exit normally (${err.signal ?? err.code ?? err.message})\n${stdout}${stderr}`));
        return;
      }
      done({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/**
 * The compiled CLI to run: this tree's dist/cli/main.js when it is newer than every source file
 * (`npm test` builds it before vitest starts, so nobody rebuilds dist/ while tests run), else a
 * private build into `tmp/dist` (a bare `npx vitest` after an edit), so a stale dist/ is never
 * what a test checks and parallel files never race on rebuilding the shared one.
 */
export async function compiledCli(tmp: string): Promise<string> {
  const shared = join(REPO, 'dist/cli/main.js');
  if (existsSync(shared) && statSync(shared).mtimeMs >= newestSource(join(REPO, 'src'))) return shared;
  const out = join(tmp, 'dist');
  const tsc = join(REPO, 'node_modules/typescript/bin/tsc');
  const build = await runProcess(process.execPath, [tsc, '-p', join(REPO, 'tsconfig.build.json'), '--outDir', out], { cwd: REPO, env: { PATH: process.env.PATH } }, 90_000);
  if (build.code !== 0) throw new Error(`building the CLI failed (tsc exit ${build.code}):\n${build.stdout}${build.stderr}`);
  // the compiled files are ES modules and import the project's dependencies
  // and name the version as the repository's does (the node registry reports it)
  const { name, version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { name: string; version: string };
  writeFileSync(join(tmp, 'package.json'), `${JSON.stringify({ name, version, type: 'module' })}\n`);
  symlinkSync(join(REPO, 'node_modules'), join(tmp, 'node_modules'), 'dir');
  const cli = join(out, 'cli/main.js');
  if (!existsSync(cli)) throw new Error(`the build did not produce ${cli}`);
  return cli;
}
