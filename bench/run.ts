/**
 * npm run bench — sendas against Postfix, on this machine, same run, same smtp-sink upstream.
 *
 *   npm run bench                          build, then every scenario, 3 runs each
 *   npm run bench -- --runs 1 --quick      one run, smaller batches (scenario 1: 1,000 messages)
 *   npm run bench -- --scenarios 1,3       only some scenarios
 *   npm run bench -- --sink node           no Postfix at all: a Node sink and the Node client
 *                                          (what the smoke test runs, with --tiny)
 *
 * Prints one table per scenario (medians over the runs) and the targets, and writes everything,
 * every run included, to bench/results/latest.json (--out FILE to change).
 * See BENCHMARKS.md for what each number means and the results on the reference machine.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, freemem, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { nodeLoad, smtpSourceLoad } from './lib/load.js';
import { ensurePostfix, postfixVersion } from './lib/postfix.js';
import { cleanupAll, onCleanup } from './lib/proc.js';
import type { RelayKind } from './lib/relays.js';
import { FULL, QUICK, TINY, scenario1, scenario2, scenario3, scenario4, verifyRelays, type Ctx, type Metrics, type RunResult, type Sizes } from './lib/scenarios.js';
import { startNodeSink, startSmtpSink } from './lib/sink.js';
import { medianRecord } from './lib/stats.js';
import { renderReport, evaluateTargets, computeRatios } from './lib/report.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const USAGE = `usage: tsx bench/run.ts [--runs N] [--quick | --tiny] [--scenarios 1,2,3,4]
       [--sink smtp-sink|node] [--no-postfix] [--relays ceiling,postfix,sendas-queue,sendas-passthrough[,sendas-queue-dkim,sendas-passthrough-dkim,sendas-queue-cluster,sendas-passthrough-cluster]]
       [--out FILE] [--cli dist/cli/main.js] [--cpu-prof DIR] [--keep-tmp] [--no-install] [--no-verify]
       [--s1-messages N] [--s2-sizes 1,10,50] [--s4-agents 10,10000]
       tsx bench/run.ts --report bench/results/latest.json   (print a saved run again)`;

export interface BenchReport {
  meta: Record<string, unknown>;
  sizes: Sizes;
  verify: Record<string, string>;
  scenarios: Record<string, { runs: RunResult[]; median: Record<string, Metrics> }>;
  ratios: Record<string, number | undefined>;
  targets: { name: string; target: string; value: number | undefined; pass: boolean | undefined }[];
  errors: string[];
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      quick: { type: 'boolean', default: false },
      tiny: { type: 'boolean', default: false },
      scenarios: { type: 'string', default: '1,2,3,4' },
      sink: { type: 'string', default: 'smtp-sink' },
      'no-postfix': { type: 'boolean', default: false },
      relays: { type: 'string' },
      out: { type: 'string', default: join(repo, 'bench', 'results', 'latest.json') },
      cli: { type: 'string', default: join(repo, 'dist', 'cli', 'main.js') },
      'cpu-prof': { type: 'string' },
      'keep-tmp': { type: 'boolean', default: false },
      'no-install': { type: 'boolean', default: false },
      'no-verify': { type: 'boolean', default: false },
      's1-messages': { type: 'string' },
      's2-sizes': { type: 'string' },
      's4-agents': { type: 'string' },
      report: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.report) {
    // re-render a results file (after a change to the report or the targets), and update its ratios and targets
    const file = resolve(values.report);
    const saved = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
    saved.ratios = computeRatios(saved);
    saved.targets = evaluateTargets(saved);
    writeFileSync(file, JSON.stringify(saved, null, 2) + '\n');
    process.stdout.write(renderReport(saved));
    return 0;
  }
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer\n${USAGE}`);
  if (values.sink !== 'smtp-sink' && values.sink !== 'node') throw new Error(`--sink is smtp-sink or node\n${USAGE}`);
  const nodeSink = values.sink === 'node';
  const withPostfix = !nodeSink && !values['no-postfix'];
  const sizes: Sizes = { ...(values.tiny ? TINY : values.quick ? QUICK : FULL) };
  // overrides, for experiments (the presets are what BENCHMARKS.md reports)
  if (values['s1-messages']) sizes.s1Messages = sizes.s1LatencyMessages = Number(values['s1-messages']);
  if (values['s2-sizes']) sizes.s2SizesMb = values['s2-sizes'].split(',').map(Number);
  if (values['s4-agents']) sizes.s4Agents = values['s4-agents'].split(',').map(Number) as [number, number];
  const scenarios = values.scenarios.split(',').map((s) => Number(s.trim())).filter((n) => [1, 2, 3, 4].includes(n));
  const allRelays: RelayKind[] = ['ceiling', 'postfix', 'sendas-queue', 'sendas-passthrough'];
  let relays = values.relays ? (values.relays.split(',').map((s) => s.trim()) as RelayKind[]) : allRelays;
  // the DKIM and cluster variants run when named only (the A/B of signing's and of Redis's cost)
  const knownRelays: RelayKind[] = [...allRelays, 'sendas-queue-dkim', 'sendas-passthrough-dkim', 'sendas-queue-cluster', 'sendas-passthrough-cluster'];
  for (const r of relays) if (!knownRelays.includes(r)) throw new Error(`unknown relay ${r}; known: ${knownRelays.join(', ')}`);
  if (!withPostfix) relays = relays.filter((r) => r !== 'postfix');
  const cli = resolve(values.cli);
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build (npm run bench builds first)`);
  const log = (line: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

  if (!nodeSink) {
    if (values['no-install']) process.env.PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;
    else await ensurePostfix(log);
  }

  const tmp = mkdtempSync(join(tmpdir(), 'sendas-bench-'));
  chmodSync(tmp, 0o755); // Postfix's daemons and smtp-sink (user nobody) must reach their dirs
  if (!values['keep-tmp']) onCleanup(() => rmSync(tmp, { recursive: true, force: true }));
  else log(`temp dir kept: ${tmp}`);
  let seq = 0;
  const cpuProfDir = values['cpu-prof'] ? resolve(values['cpu-prof']) : undefined;
  if (cpuProfDir) mkdirSync(cpuProfDir, { recursive: true });

  const ctx: Ctx = {
    sizes,
    relays,
    load: nodeSink ? nodeLoad : smtpSourceLoad,
    newSink: (captureDir) => (nodeSink ? startNodeSink() : startSmtpSink({ captureDir })),
    freshDir: (label) => {
      const d = join(tmp, `${String(++seq).padStart(3, '0')}-${label}`);
      mkdirSync(d, { recursive: true });
      chmodSync(d, 0o755);
      return d;
    },
    cli,
    nodeArgs: cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [],
    log,
  };

  const meta = machineMeta(withPostfix, nodeSink, runs, values.quick ? 'quick' : values.tiny ? 'tiny' : 'full');
  log(`${meta.nproc} cores, node ${process.version}${withPostfix ? `, postfix ${String(meta.postfix)}` : ''}; ${runs} run(s) of scenario(s) ${scenarios.join(', ')}; relays: ${relays.join(', ')}`);

  const report: BenchReport = { meta, sizes, verify: {}, scenarios: {}, ratios: {}, targets: [], errors: [] };
  if (!values['no-verify']) report.verify = await verifyRelays(ctx);

  const fns: Record<number, (c: Ctx) => Promise<RunResult>> = { 1: scenario1, 2: scenario2, 3: scenario3, 4: scenario4 };
  for (const s of scenarios) {
    const key = `s${s}`;
    const results: RunResult[] = [];
    for (let i = 1; i <= runs; i++) {
      log(`scenario ${s}, run ${i} of ${runs}`);
      const r = await fns[s]!(ctx);
      results.push(r);
      report.errors.push(...r.errors.map((e) => `scenario ${s} run ${i}: ${e}`));
    }
    const rows = new Set(results.flatMap((r) => Object.keys(r.rows)));
    const med: Record<string, Metrics> = {};
    for (const row of rows) med[row] = medianRecord(results.map((r) => r.rows[row]).filter((m): m is Metrics => m !== undefined));
    report.scenarios[key] = { runs: results, median: med };
  }
  report.ratios = computeRatios(report);
  report.targets = evaluateTargets(report);

  mkdirSync(dirname(resolve(values.out)), { recursive: true });
  writeFileSync(resolve(values.out), JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(renderReport(report));
  log(`results written to ${resolve(values.out)}`);
  return report.errors.length > 0 ? 1 : 0;
}

function machineMeta(withPostfix: boolean, nodeSink: boolean, runs: number, preset: string): Record<string, unknown> {
  const sh = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return 'unknown';
    }
  };
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string };
  const dirty = sh('git', ['-C', repo, 'status', '--porcelain', '--', 'src']) !== '';
  return {
    date: new Date().toISOString(),
    command: `tsx bench/run.ts ${process.argv.slice(2).join(' ')}`.trim(),
    preset,
    runs,
    sink: nodeSink ? 'node' : 'smtp-sink',
    nproc: sh('nproc', []),
    cpu: cpus()[0]?.model ?? 'unknown',
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB total, ${Math.round(freemem() / 2 ** 30)} GiB free at start`,
    freeG: sh('free', ['-g']),
    kernel: release(),
    os: sh('sh', ['-c', '. /etc/os-release && echo "$PRETTY_NAME"']),
    node: process.version,
    postfix: withPostfix ? postfixVersion() : undefined,
    sendas: `${pkg.version} (${sh('git', ['-C', repo, 'rev-parse', '--short', 'HEAD'])}${dirty ? ', src/ modified' : ''})`,
  };
}

main().then(
  (code) => {
    cleanupAll();
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    cleanupAll();
    process.exit(2);
  },
);
