/**
 * The benchmark is a script (npm run bench), not a test: this only runs its harness at tiny sizes
 * so it can't rot — every scenario, against the real `sendas serve`, with the harness's own Node
 * SMTP sink and client instead of Postfix's tools. It checks that numbers came out, never how
 * good they are.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('..', import.meta.url));

interface Report {
  verify: Record<string, string>;
  scenarios: Record<string, { median: Record<string, Record<string, number | undefined>> }>;
  errors: string[];
}

function runHarness(out: string): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', join(repo, 'bench', 'run.ts'), '--tiny', '--runs', '1', '--sink', 'node', '--out', out], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGTERM'), 40_000);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    }),
  );
}

const positive = (v: number | undefined) => typeof v === 'number' && Number.isFinite(v) && v > 0;

describe('bench harness (npm run bench) at tiny sizes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sendas-bench-smoke-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs every scenario against the real relay and reports numbers for each', { timeout: 45_000 }, async () => {
    expect(existsSync(join(repo, 'dist', 'cli', 'main.js')), 'dist/ is built by npm test before vitest').toBe(true);
    const out = join(dir, 'latest.json');
    const run = await runHarness(out);
    expect(run.code, `harness failed:\n${run.stderr.slice(-3000)}`).toBe(0);
    expect(run.ms).toBeLessThan(30_000);

    const report = JSON.parse(readFileSync(out, 'utf8')) as Report;
    expect(report.errors).toEqual([]);
    // the relay really rewrote envelope and From before anything was measured
    expect(report.verify['sendas-queue']).toMatch(/^ok /);
    expect(report.verify['sendas-passthrough']).toMatch(/^ok /);

    const s1 = report.scenarios.s1!.median;
    for (const kind of ['ceiling', 'sendas-queue', 'sendas-passthrough']) {
      expect(positive(s1[kind]?.msgsPerSec), `s1 ${kind} msgs/s`).toBe(true);
      expect(positive(s1[kind]?.latP50Ms), `s1 ${kind} p50`).toBe(true);
      expect(positive(s1[kind]?.latP99Ms), `s1 ${kind} p99`).toBe(true);
    }
    for (const kind of ['sendas-queue', 'sendas-passthrough']) {
      const s2 = report.scenarios.s2!.median[`1MB/${kind}`];
      expect(positive(s2?.seconds), `s2 ${kind} time`).toBe(true);
      expect(positive(s2?.peakMemMb), `s2 ${kind} peak RSS`).toBe(true);
    }
    const s3 = report.scenarios.s3!.median['sendas-queue'];
    expect(s3?.greeted).toBe(20);
    expect(positive(s3?.memMb)).toBe(true);
    for (const agents of [10, 100]) {
      const s4 = report.scenarios.s4!.median[`${agents}/sendas-passthrough`];
      for (const key of ['startMs', 'reloadMs', 'fileEditReloadMs', 'msgsPerSec', 'memAfterStartMb']) {
        expect(positive(s4?.[key]), `s4 ${agents} agents ${key}`).toBe(true);
      }
    }
    // the printed report has the tables and the targets
    expect(run.stdout).toContain('### Scenario 1');
    expect(run.stdout).toContain('### Scenario 4');
    expect(run.stdout).toContain('### Targets');
  });
});
