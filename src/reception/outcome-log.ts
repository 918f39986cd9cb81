import type { Trace } from '../history/trace.js';
import type { TraceEvent } from '../history/types.js';
import type { Logger } from '../log.js';
import type { RelayMetrics } from '../ops/metrics.js';

export type ReceptionResult = 'relayed' | 'queued' | 'partial' | 'refused';

/** The one place a message's outcome at SMTP time is recorded: log line and metrics together. */
export class OutcomeLog {
  constructor(
    private readonly logger: Logger,
    private readonly metrics: RelayMetrics,
    private readonly trace?: Trace,
  ) {}

  /** A recipient's outcome: its trace line and its history row. */
  traced(event: TraceEvent): void {
    this.trace?.record(event);
  }

  /** Into the history only (the message's own line says it). */
  kept(event: TraceEvent): void {
    this.trace?.keep(event);
  }

  record(result: ReceptionResult, fields: Record<string, unknown>): void {
    const server = typeof fields.server === 'string' ? fields.server : 'none';
    if (result === 'refused') {
      this.metrics.refused.inc({ reason: String(fields.kind ?? 'internal'), server });
    } else {
      this.metrics.received.inc({ server });
      if (result !== 'queued') this.metrics.relayed.inc({ server });
    }
    const level = result === 'relayed' || result === 'queued' ? 'info' : 'warn';
    this.logger[level]({ result, ...fields }, `message ${result}`);
  }

  debug(fields: Record<string, unknown>, text: string): void {
    this.logger.debug(fields, text);
  }
}
