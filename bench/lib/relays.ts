/**
 * The relays under test behind one interface, each started fresh (own temp dir, own queue) in
 * front of a fresh sink: Postfix, sendas with `delivery: queue`, sendas with `passthrough`, and
 * "ceiling" — no relay at all, the load generator straight into the sink.
 */
import { join } from 'node:path';
import { PostfixInstance } from './postfix.js';
import { freePort } from './proc.js';
import { startBenchRedis } from './redis.js';
import { startSendas, writeSendasConfig, type DeliveryMode, type SendasProcess } from './sendas.js';
import type { Sink } from './sink.js';

/**
 * The -dkim variants sign every message (an RSA-2048 key for the bench domain): the A/B of DKIM's
 * cost. The -cluster variants are the same relay with `cluster:` pointing at a redis-server the
 * harness starts for it (one replica: the cost of the shared rate, lease and registry traffic).
 */
export type RelayKind = 'ceiling' | 'postfix' | 'sendas-queue' | 'sendas-passthrough' | 'sendas-queue-dkim' | 'sendas-passthrough-dkim' | 'sendas-queue-cluster' | 'sendas-passthrough-cluster';

export interface RelayUnderTest {
  readonly kind: RelayKind;
  readonly port: number;
  /** ms from the start command until it served SMTP */
  readonly startMs: number;
  /** current memory in kB: sendas VmRSS; Postfix the sum of PSS over its processes; ceiling 0 */
  memoryKb(): number;
  /** sendas's exact peak RSS (VmHWM) in kB; undefined for Postfix (sample memoryKb() instead) */
  peakKb(): number | undefined;
  /** CPU used so far, in clock ticks */
  cpuTicks(): number;
  /** the sendas process, for log-line waits and reloads */
  readonly sendas?: SendasProcess;
  readonly postfix?: PostfixInstance;
  stop(): Promise<void>;
}

export interface StartRelayOptions {
  kind: RelayKind;
  sink: Sink;
  /** a fresh directory for this relay's config and queue */
  dir: string;
  agents: number;
  /** path of sendas's built CLI (dist/cli/main.js) */
  cli: string;
  nodeArgs?: string[];
}

export async function startRelay(opts: StartRelayOptions): Promise<RelayUnderTest> {
  const { kind, sink } = opts;
  if (kind === 'ceiling') {
    return { kind, port: sink.port, startMs: 0, memoryKb: () => 0, peakKb: () => undefined, cpuTicks: () => 0, stop: async () => undefined };
  }
  if (kind === 'postfix') {
    const { instance } = await PostfixInstance.create({ dir: join(opts.dir, 'postfix'), port: await freePort(), sinkPort: sink.port, agents: opts.agents });
    let startMs: number;
    try {
      startMs = await instance.start();
    } catch (err) {
      await instance.stop();
      throw err;
    }
    return {
      kind,
      port: instance.port,
      startMs,
      memoryKb: () => instance.memoryKb(),
      peakKb: () => undefined,
      cpuTicks: () => instance.cpuTicks(),
      postfix: instance,
      stop: () => instance.stop(),
    };
  }
  const mode: DeliveryMode = kind.startsWith('sendas-queue') ? 'queue' : 'passthrough';
  const redis = kind.endsWith('-cluster') ? await startBenchRedis(opts.dir) : undefined;
  const config = writeSendasConfig({ dir: join(opts.dir, 'sendas'), mode, sinkPort: sink.port, agents: opts.agents, dkim: kind.endsWith('-dkim'), redisUrl: redis?.url });
  let proc: SendasProcess;
  try {
    proc = await startSendas(config, opts.cli, { nodeArgs: opts.nodeArgs });
  } catch (err) {
    await redis?.stop();
    throw err;
  }
  // the relay connects before it listens: a Redis it could not reach would measure the local fallback
  const unreached = proc.problems().find((l) => l.includes('Redis does not answer'));
  if (redis && unreached) {
    await proc.stop();
    await redis.stop();
    throw new Error(`sendas did not reach the bench's Redis: ${unreached}`);
  }
  return {
    kind,
    port: proc.port,
    startMs: proc.startMs,
    memoryKb: () => proc.memory()?.rssKb ?? 0,
    peakKb: () => proc.memory()?.hwmKb,
    cpuTicks: () => proc.cpuTicks(),
    sendas: proc,
    stop: async () => {
      await proc.stop();
      await redis?.stop();
    },
  };
}
