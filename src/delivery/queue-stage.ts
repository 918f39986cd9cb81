import { access, constants } from 'node:fs/promises';
import type { ConfigSnapshot } from '../config/types.js';
import type { Logger } from '../log.js';
import { createNoticeWriter } from '../notify/notice-writer.js';
import type { RelayMetrics } from '../ops/metrics.js';
import { QueueControl } from '../queue/control.js';
import type { QueueEntryMeta } from '../queue/entry.js';
import { QueueStore } from '../queue/store.js';
import type { Transport } from '../transport/transport.js';
import type { Trace } from '../history/trace.js';
import type { AccountBook } from './accounts.js';
import { QueueRunner } from './queue-runner.js';
import { queueTransport } from './queue-transport.js';

export interface QueueStageOptions {
  readonly dir: string;
  readonly getSnapshot: () => ConfigSnapshot;
  readonly transport: Transport;
  readonly logger: Logger;
  readonly metrics: RelayMetrics;
  /** Our name, in failure notices. */
  readonly hostname: string;
  /** Every account's budgets and health, shared with passthrough and /status. */
  readonly accounts: AccountBook;
  /** The message trace: a line and a history row per recipient and attempt. */
  readonly trace?: Trace;
}

/**
 * delivery: queue, assembled — Postfix's queue manager and the queue it works on: the store on
 * disk, the runner that delivers from it, the notices it writes back into it, and the control
 * channel of `sendas queue`.
 */
export class QueueStage {
  readonly store: QueueStore;
  readonly runner: QueueRunner;
  private readonly control: QueueControl;

  constructor(opts: QueueStageOptions) {
    const store = (this.store = new QueueStore(opts.dir));
    const writeNotice = createNoticeWriter({ store, getSnapshot: opts.getSnapshot, enqueue: (m) => this.runner.enqueue(m), logger: opts.logger, hostname: opts.hostname });
    this.runner = new QueueRunner({
      store,
      getSnapshot: opts.getSnapshot,
      logger: opts.logger,
      accounts: opts.accounts,
      writeNotice,
      metrics: opts.metrics,
      transport: queueTransport(store, opts.transport),
      ...(opts.trace ? { trace: opts.trace } : {}),
    });
    this.control = new QueueControl(store, this.runner, opts.logger);
  }

  /** Claims the queue directory, starts the control channel and picks up what is queued; resolves with that count. */
  async start(): Promise<number> {
    // claim the queue directory first: two relays on one queue would deliver messages twice
    await this.store.init();
    await this.control.start();
    return this.runner.start();
  }

  /** Where reception puts what it accepts: the store, and the runner for each durable entry. */
  get intake(): { readonly store: QueueStore; enqueue(meta: QueueEntryMeta): void } {
    return { store: this.store, enqueue: (meta) => this.runner.enqueue(meta) };
  }

  /** For /readyz: what keeps the queue from accepting. */
  async problems(): Promise<string[]> {
    try {
      for (const area of ['tmp', 'journal'] as const) await access(this.store.areaDir(area), constants.W_OK);
    } catch {
      return [`the queue directory ${this.store.dir} is not writable`];
    }
    const problem = await this.store.health.problem();
    return problem ? [`${problem} (${this.store.dir})`] : [];
  }

  /** Running deliveries get `graceMs` to finish; the rest stays queued for the next start. */
  async stop(graceMs: number): Promise<void> {
    await this.runner.stop(graceMs);
    await this.control.stop();
  }

  /** After the listener has closed: nothing more is accepted. */
  close(): Promise<void> {
    return this.store.close();
  }
}
