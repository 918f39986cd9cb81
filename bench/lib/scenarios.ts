/**
 * The four scenarios of the benchmark. Each run starts every relay fresh in front of a fresh
 * sink, so the numbers of one relay never depend on what another left behind.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { nodeLoad, type LoadGenerator } from './load.js';
import { MemorySampler, TICKS_PER_SECOND, sleep } from './proc.js';
import { startRelay, type RelayKind, type RelayUnderTest } from './relays.js';
import type { Sink, CapturedMessage } from './sink.js';
import { agentAddress, RECIPIENT, RELAY_ACCOUNT, writeSendasConfig } from './sendas.js';
import { openIdleConnections } from './smtp-client.js';
import { percentile } from './stats.js';

export type Metrics = Record<string, number | undefined>;
/** One run of a scenario: metrics per row ("sendas-queue", "50MB/postfix", …), and what failed. */
export interface RunResult {
  rows: Record<string, Metrics>;
  errors: string[];
}

export interface Sizes {
  s1Messages: number;
  s1LatencyMessages: number;
  s1Sessions: number;
  s1Size: number;
  s1Agents: number;
  s2SizesMb: number[];
  s3Connections: number;
  s4Agents: [number, number];
  s4Batch: number;
  s4Sessions: number;
}

export const FULL: Sizes = {
  s1Messages: 5000,
  s1LatencyMessages: 5000,
  s1Sessions: 20,
  s1Size: 2000,
  s1Agents: 10,
  s2SizesMb: [1, 10, 50],
  s3Connections: 1000,
  s4Agents: [10, 10_000],
  s4Batch: 2000,
  s4Sessions: 20,
};

export const QUICK: Sizes = { ...FULL, s1Messages: 1000, s1LatencyMessages: 1000, s4Batch: 500 };

/** The smoke test's sizes: seconds, not minutes. */
export const TINY: Sizes = {
  s1Messages: 20,
  s1LatencyMessages: 20,
  s1Sessions: 5,
  s1Size: 2000,
  s1Agents: 10,
  s2SizesMb: [1],
  s3Connections: 20,
  s4Agents: [10, 100],
  s4Batch: 20,
  s4Sessions: 5,
};

export interface Ctx {
  sizes: Sizes;
  /** relays to measure, in order ("ceiling" only where it means something) */
  relays: RelayKind[];
  /** the throughput load generator (smtp-source, or the Node client with --sink node) */
  load: LoadGenerator;
  newSink(captureDir?: string): Promise<Sink>;
  /** a fresh directory under the run's temp dir */
  freshDir(label: string): string;
  cli: string;
  nodeArgs: string[];
  log(line: string): void;
}

const MB = 1024 * 1024;
const ms = (ticks: number) => (ticks * 1000) / TICKS_PER_SECOND;

/** Starts a sink and a relay, runs fn, and always stops both. */
async function withRelay<T>(ctx: Ctx, kind: RelayKind, agents: number, fn: (relay: RelayUnderTest, sink: Sink) => Promise<T>, captureDir?: string): Promise<T> {
  // every relay starts with nothing of the previous one's writes still going to disk: the one
  // measured after Postfix (whose queue files were just written and deleted) must not pay for them
  flushDisk();
  const sink = await ctx.newSink(captureDir);
  let relay: RelayUnderTest | undefined;
  try {
    relay = await startRelay({ kind, sink, dir: ctx.freshDir(kind), agents, cli: ctx.cli, nodeArgs: ctx.nodeArgs });
    return await fn(relay, sink);
  } finally {
    await relay?.stop();
    await sink.stop();
  }
}

function flushDisk(): void {
  try {
    execFileSync('sync', { stdio: 'ignore', timeout: 60_000 });
  } catch {
    // no sync(1): measure anyway
  }
}

function sinkTimeout(messages: number, bytesEach: number): number {
  return 60_000 + messages * 20 + (messages * bytesEach) / 50_000;
}

/**
 * Checks, once per relay before measuring, that the relay really does the work being measured:
 * the sink must see the envelope sender and the From header rewritten to the relay account.
 */
export async function verifyRelays(ctx: Ctx): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const kind of ctx.relays.filter((k) => k !== 'ceiling')) {
    const captureDir = ctx.freshDir(`verify-${kind}`);
    try {
      const captured = await withRelay(
        ctx,
        kind,
        ctx.sizes.s1Agents,
        async (relay, sink) => {
          const r = await ctx.load({ port: relay.port, from: agentAddress(ctx.sizes.s1Agents), to: RECIPIENT, size: 500, count: 2, sessions: 1 });
          if (r.failures.length > 0) throw new Error(r.failures.join('; '));
          await sink.waitFor(2, 30_000);
          await sleep(200); // smtp-sink closes its dump file after the reply
          return sink.captured();
        },
        join(captureDir, 'dump'),
      );
      out[kind] = checkRewrite(captured, kind.endsWith('-dkim'));
    } catch (err) {
      out[kind] = `FAILED: ${(err as Error).message}`;
    }
    ctx.log(`verify ${kind}: ${out[kind]}`);
  }
  return out;
}

function checkRewrite(captured: CapturedMessage[], signed = false): string {
  if (captured.length === 0) return 'FAILED: the sink captured nothing';
  const m = captured[0]!;
  const from = /^From:(.*(?:\n[ \t].*)*)/im.exec(m.headers)?.[1]?.trim() ?? '(none)';
  const problems: string[] = [];
  if (m.mailFrom.toLowerCase() !== RELAY_ACCOUNT) problems.push(`envelope sender ${m.mailFrom}`);
  if (!from.toLowerCase().includes(RELAY_ACCOUNT)) problems.push(`From: ${from}`);
  if (signed && !/^DKIM-Signature:[^]*?\bd=bench\.example;/im.test(m.headers)) problems.push('no DKIM-Signature with d=bench.example');
  return problems.length === 0 ? `ok (envelope <${m.mailFrom}>, From: ${from})` : `FAILED: not rewritten to ${RELAY_ACCOUNT}: ${problems.join(', ')}`;
}

/**
 * Scenario 1: N messages of 2 KB over 20 sessions (smtp-source -s 20 -m N -l 2000).
 * msgs/s end to end = N / (first accept → the sink has the N-th message). Then a latency pass of
 * the same shape with the Node client, which times each message.
 */
export async function scenario1(ctx: Ctx): Promise<RunResult> {
  const { s1Messages: n, s1LatencyMessages: l, s1Sessions: sessions, s1Size: size, s1Agents: agents } = ctx.sizes;
  const from = agentAddress(agents);
  const result: RunResult = { rows: {}, errors: [] };
  for (const kind of ctx.relays) {
    try {
      result.rows[kind] = await withRelay(ctx, kind, agents, async (relay, sink) => {
        const mem = new MemorySampler(() => relay.memoryKb(), kind === 'postfix' ? 200 : 100).start();
        const cpu0 = relay.cpuTicks();
        const t = await ctx.load({ port: relay.port, from, to: RECIPIENT, size, count: n, sessions });
        if (t.accepted < n || t.firstAcceptAt === undefined) throw new Error(`${t.accepted} of ${n} accepted: ${t.failures.join('; ')}`);
        const sinkLast = await sink.waitFor(n, sinkTimeout(n, size));
        const cpu1 = relay.cpuTicks();
        const metrics: Metrics = {
          msgsPerSec: n / ((sinkLast - t.firstAcceptAt) / 1000),
          acceptPerSec: t.lastAcceptAt !== undefined ? n / ((t.lastAcceptAt - t.startedAt) / 1000) : undefined,
          drainMs: t.lastAcceptAt !== undefined ? sinkLast - t.lastAcceptAt : undefined,
          cpuMsPerMsg: kind === 'ceiling' ? undefined : ms(cpu1 - cpu0) / n,
        };
        if (l > 0) {
          const lat = await nodeLoad({ port: relay.port, from, to: RECIPIENT, size, count: l, sessions });
          if (lat.accepted < l) throw new Error(`latency pass: ${lat.accepted} of ${l} accepted: ${lat.failures.join('; ')}`);
          await sink.waitFor(n + l, sinkTimeout(l, size));
          const { transactionMs = [], acceptMs = [], greetingMs = [] } = lat.latencies ?? {};
          Object.assign(metrics, {
            latP50Ms: percentile(transactionMs, 50),
            latP99Ms: percentile(transactionMs, 99),
            dotP50Ms: percentile(acceptMs, 50),
            dotP99Ms: percentile(acceptMs, 99),
            greetP50Ms: percentile(greetingMs, 50),
            greetP99Ms: percentile(greetingMs, 99),
            latencyPassPerSec: lat.lastAcceptAt !== undefined ? l / ((lat.lastAcceptAt - lat.startedAt) / 1000) : undefined,
          });
        }
        const m = mem.stop();
        if (kind !== 'ceiling') metrics.peakMemMb = (relay.peakKb() ?? m.peakKb) / 1024;
        return metrics;
      });
      ctx.log(`s1 ${kind}: ${fmtMetrics(result.rows[kind]!)}`);
    } catch (err) {
      result.errors.push(`${kind}: ${(err as Error).message}`);
      ctx.log(`s1 ${kind}: ERROR ${(err as Error).message}`);
    }
  }
  return result;
}

/** Scenario 2: one message of 1, 10 and 50 MB; peak memory and time (start of sending → the sink has it). */
export async function scenario2(ctx: Ctx): Promise<RunResult> {
  const result: RunResult = { rows: {}, errors: [] };
  const from = agentAddress(ctx.sizes.s1Agents);
  for (const sizeMb of ctx.sizes.s2SizesMb) {
    for (const kind of ctx.relays.filter((k) => k !== 'ceiling')) {
      const row = `${sizeMb}MB/${kind}`;
      try {
        result.rows[row] = await withRelay(ctx, kind, ctx.sizes.s1Agents, async (relay, sink) => {
          await sleep(300);
          const baseline = relay.memoryKb();
          const mem = new MemorySampler(() => relay.memoryKb(), kind === 'postfix' ? 50 : 20).start();
          const t0 = performance.now();
          const r = await ctx.load({ port: relay.port, from, to: RECIPIENT, size: sizeMb * MB, count: 1, sessions: 1 });
          if (r.accepted < 1) throw new Error(`not accepted: ${r.failures.join('; ')}`);
          const at = await sink.waitFor(1, sinkTimeout(1, sizeMb * MB));
          const sampled = mem.stop();
          const peak = relay.peakKb() ?? sampled.peakKb;
          return { seconds: (at - t0) / 1000, peakMemMb: peak / 1024, baselineMb: baseline / 1024, growthMb: (peak - baseline) / 1024 };
        });
        ctx.log(`s2 ${row}: ${fmtMetrics(result.rows[row]!)}`);
      } catch (err) {
        result.errors.push(`${row}: ${(err as Error).message}`);
        ctx.log(`s2 ${row}: ERROR ${(err as Error).message}`);
      }
    }
  }
  return result;
}

/** Scenario 3: N concurrent idle client connections (greeted, EHLO said, then silent); the relay's memory. */
export async function scenario3(ctx: Ctx): Promise<RunResult> {
  const result: RunResult = { rows: {}, errors: [] };
  const n = ctx.sizes.s3Connections;
  // the listener does not depend on the delivery mode: the default mode stands for sendas
  const kinds = ctx.relays.filter((k) => k === 'postfix' || k === 'sendas-queue');
  for (const kind of kinds) {
    try {
      result.rows[kind] = await withRelay(ctx, kind, ctx.sizes.s1Agents, async (relay) => {
        await sleep(300);
        const baseline = relay.memoryKb();
        const idle = await openIdleConnections(relay.port, n, kind === 'postfix' ? 3_000 : 10_000);
        try {
          await sleep(1_000);
          let memory = 0;
          for (let i = 0; i < 5; i++) {
            memory = Math.max(memory, relay.memoryKb());
            await sleep(200);
          }
          return { memMb: memory / 1024, baselineMb: baseline / 1024, greeted: idle.greeted, greetAllMs: idle.greetAllMs, peakMemMb: (relay.peakKb() ?? memory) / 1024 };
        } finally {
          idle.close();
        }
      });
      ctx.log(`s3 ${kind}: ${fmtMetrics(result.rows[kind]!)}`);
    } catch (err) {
      result.errors.push(`${kind}: ${(err as Error).message}`);
      ctx.log(`s3 ${kind}: ERROR ${(err as Error).message}`);
    }
  }
  return result;
}

/**
 * Scenario 4: a config of 10 and of 10,000 agents. Start time, reload time (SIGHUP after adding
 * an agent; and a plain file edit, which the watcher picks up after its 250 ms debounce), and the
 * per-message cost of a batch sent as the last agent over reused sessions (passthrough: every
 * message resolves its identity while the client waits).
 * Postfix: the same agents in both maps; start = `postfix start` → greeting, reload = postmap +
 * `postfix reload` after adding an agent.
 */
export async function scenario4(ctx: Ctx): Promise<RunResult> {
  const result: RunResult = { rows: {}, errors: [] };
  const { s4Batch: batch, s4Sessions: sessions } = ctx.sizes;
  const kinds = ctx.relays.filter((k) => k === 'postfix' || k === 'sendas-passthrough');
  for (const agents of ctx.sizes.s4Agents) {
    for (const kind of kinds) {
      const row = `${agents}/${kind}`;
      try {
        result.rows[row] = await withRelay(ctx, kind, agents, async (relay, sink) => {
          await sleep(200);
          const metrics: Metrics = { startMs: relay.startMs, memAfterStartMb: relay.memoryKb() / 1024 };
          // per-message cost (and memory while it runs: Postfix has no single peak to read)
          const mem = new MemorySampler(() => relay.memoryKb(), kind === 'postfix' ? 200 : 100).start();
          const cpu0 = relay.cpuTicks();
          const t = await ctx.load({ port: relay.port, from: agentAddress(agents), to: RECIPIENT, size: 2000, count: batch, sessions, reuse: true });
          if (t.accepted < batch || t.firstAcceptAt === undefined) throw new Error(`${t.accepted} of ${batch} accepted: ${t.failures.join('; ')}`);
          const last = await sink.waitFor(batch, sinkTimeout(batch, 2000));
          metrics.msgsPerSec = batch / ((last - t.firstAcceptAt) / 1000);
          metrics.cpuMsPerMsg = ms(relay.cpuTicks() - cpu0) / batch;
          const sampled = mem.stop();
          // reload
          if (relay.sendas) {
            const proc = relay.sendas;
            writeSendasConfig({ dir: sendasDirOf(relay), mode: 'passthrough', sinkPort: sink.port, agents, extra: 1 });
            let t0 = performance.now();
            const reloaded = proc.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reloaded') && l.reason === 'SIGHUP', 60_000);
            proc.child.kill('SIGHUP');
            metrics.reloadMs = (await reloaded) - t0;
            // the watcher saw the first write too: let its debounced (no-op) reload pass
            await sleep(600);
            t0 = performance.now();
            const watched = proc.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reloaded') && String(l.reason).startsWith('file changed'), 60_000);
            writeSendasConfig({ dir: sendasDirOf(relay), mode: 'passthrough', sinkPort: sink.port, agents, extra: 2 });
            metrics.fileEditReloadMs = (await watched) - t0;
          } else if (relay.postfix) {
            metrics.reloadMs = await relay.postfix.addAgentAndReload(agents + 1);
          }
          metrics.peakMemMb = (relay.peakKb() ?? sampled.peakKb) / 1024;
          return metrics;
        });
        ctx.log(`s4 ${row}: ${fmtMetrics(result.rows[row]!)}`);
      } catch (err) {
        result.errors.push(`${row}: ${(err as Error).message}`);
        ctx.log(`s4 ${row}: ERROR ${(err as Error).message}`);
      }
    }
  }
  return result;
}

/** startRelay puts sendas's config in <relay dir>/sendas: recover it from the config path the process was given. */
function sendasDirOf(relay: RelayUnderTest): string {
  const args = relay.sendas!.child.spawnargs;
  const config = args[args.indexOf('--config') + 1]!;
  return config.slice(0, config.lastIndexOf('/'));
}

export function fmtMetrics(m: Metrics): string {
  return Object.entries(m)
    .map(([k, v]) => `${k}=${v === undefined ? '-' : Number.isInteger(v) ? v : v.toFixed(v >= 100 ? 0 : 2)}`)
    .join(' ');
}
