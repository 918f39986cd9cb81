/**
 * The relays under test behind one interface, each started fresh (own temp dir, own queue) in
 * front of a fresh sink: Postfix, sendas with `delivery: queue`, sendas with `passthrough`, and
 * "ceiling" — no relay at all, the load generator straight into the sink.
 */
import { join } from 'node:path';
import { PostfixInstance } from './postfix.js';
import { freePort } from './proc.js';
import { startSendas, writeSendasConfig, type DeliveryMode, type SendasProcess } from './sendas.js';
import type { Sink } from './sink.js';

/** The -dkim variants sign every message (an RSA-2048 key for the bench domain): the A/B of DKIM's cost. */
export type RelayKind = 'ceiling' | 'postfix' | 'sendas-queue' | 'sendas-passthrough' | 'sendas-queue-dkim' | 'sendas-passthrough-dkim';

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
  const config = writeSendasConfig({ dir: join(opts.dir, 'sendas'), mode, sinkPort: sink.port, agents: opts.agents, dkim: kind.endsWith('-dkim') });
  const proc = await startSendas(config, opts.cli, { nodeArgs: opts.nodeArgs });
  return {
    kind,
    port: proc.port,
    startMs: proc.startMs,
    memoryKb: () => proc.memory()?.rssKb ?? 0,
    peakKb: () => proc.memory()?.hwmKb,
    cpuTicks: () => proc.cpuTicks(),
    sendas: proc,
    stop: () => proc.stop(),
  };
}
