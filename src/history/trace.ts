import type { Logger } from '../log.js';
import type { Redactor } from './redact.js';
import type { TraceEvent, TraceEventKind } from './types.js';

/** Where trace events are kept (the history's writer); fire-and-forget. */
export interface TraceStore {
  add(event: TraceEvent): void;
}

const WARN: ReadonlySet<TraceEventKind> = new Set(['deferred', 'failed', 'refused']);

/**
 * The message trace's one sink: every stage hands its per-recipient outcomes here, as TraceEvent
 * values; each becomes one log line (Postfix's `to=<…>, relay=…, status=…`) and a row of the
 * delivery history. With log.redact the history gets the event with its addresses hashed, as
 * the log line has them (redactingLogger).
 */
export class Trace {
  constructor(
    private readonly logger: Logger,
    private readonly store?: TraceStore,
    private readonly redactor?: Redactor,
  ) {}

  /** One outcome: its log line and its history row. */
  record(event: TraceEvent): void {
    const level = WARN.has(event.event) ? 'warn' : 'info';
    this.logger[level](traceFields(event), traceText(event));
    this.keep(event);
  }

  /** Into the history only: the log line about it was written by the caller (a refusal at SMTP time is the one `message refused` line). */
  keep(event: TraceEvent): void {
    if (!this.store) return;
    this.store.add(this.redactor ? this.redactor.event(event) : event);
  }
}

/** The trace line's fields: `trace` is the event (a field of its own, so lines that carry `result` keep their meaning). */
export function traceFields(e: TraceEvent): Record<string, unknown> {
  return {
    trace: e.event,
    id: e.queueId,
    messageId: e.messageId,
    envelopeFrom: e.envelopeFrom,
    recipient: e.recipient,
    identity: e.identity,
    account: e.account,
    server: e.server,
    host: e.host,
    attempt: e.attempt,
    reply: e.reply,
    kind: e.kind,
    fix: e.fix,
  };
}

/** `to=<customer@example.net>, relay=smtp.office365.com:587, attempt=1, status=delivered (250 2.0.0 OK …)`. */
export function traceText(e: TraceEvent): string {
  const parts = [`to=<${e.recipient ?? ''}>`];
  if (e.host) parts.push(`relay=${e.host}`);
  if (e.attempt !== undefined) parts.push(`attempt=${e.attempt}`);
  parts.push(`status=${e.event}${e.reply ? ` (${oneLine(e.reply)})` : ''}`);
  return parts.join(', ');
}

function oneLine(s: string): string {
  return s.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}
