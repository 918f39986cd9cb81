import type { Trace } from '../history/trace.js';
import type { Logger } from '../log.js';
import type { RelayMetrics } from '../ops/metrics.js';
import type { IncomingMessage } from './incoming.js';
import { MessageInFlight } from './in-flight.js';
import { OutcomeLog } from './outcome-log.js';
import type { Transport } from '../transport/transport.js';
import { relayNow, type AccountGate } from './passthrough.js';
import { acceptIntoQueue, type QueueIntake } from './to-queue.js';

export interface ReceptionOptions {
  /** Name in the Received header. */
  readonly hostname: string;
  readonly logger: Logger;
  readonly metrics: RelayMetrics;
  /** delivery: queue — where accepted messages go; without it, every message is relayed while the client waits. */
  readonly queue: QueueIntake | undefined;
  readonly transport: Transport;
  /** passthrough: the accounts' budgets and connections (delivery/accounts.ts). */
  readonly accounts?: AccountGate;
  /** The message trace: a line and a history row per recipient outcome. */
  readonly trace?: Trace;
}

/**
 * Postfix's cleanup, for one message at a time: identity, header policy and size guard on the
 * client's stream, then the hand-off — into the queue, or straight upstream in passthrough.
 * Resolves with the text of the 250; rejects with the RelayError the client is told.
 */
export class Reception {
  private readonly log: OutcomeLog;

  constructor(private readonly opts: ReceptionOptions) {
    this.log = new OutcomeLog(opts.logger, opts.metrics, opts.trace);
  }

  async handle(msg: IncomingMessage): Promise<string> {
    const m = new MessageInFlight(msg, this.opts.hostname, this.log);
    let decision;
    try {
      decision = await m.decided;
    } catch (err) {
      return m.refuse(err);
    }
    const { queue } = this.opts;
    if (queue) return acceptIntoQueue(m, decision, queue, this.log);
    return relayNow(m, decision, this.opts.transport, this.log, this.opts.accounts);
  }
}
