import { join } from 'node:path';
import type { ConfigSnapshot } from '../config/types.js';
import { Redactor, redactKey } from '../history/redact.js';
import type { TraceEvent } from '../history/types.js';
import { TRACE_USAGE } from './usage.js';

/** One message's part of an answer: its events, oldest first, and each recipient's last one. */
export interface TracedMessage {
  readonly queueId: string;
  readonly messageId: string | undefined;
  readonly envelopeFrom: string | undefined;
  readonly events: TraceEvent[];
  /** Per recipient, the event that says where it stands. */
  readonly outcome: Record<string, TraceEvent>;
}

const DEFAULT_LIMIT = 500;

/** `sendas trace`: reads the history (read-only; the relay may be writing it). 0 found, 1 nothing found, 2 usage. */
export async function traceCommand(snapshot: ConfigSnapshot, query: string | undefined, opts: { json: boolean; limit: string | undefined }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const limit = opts.limit === undefined ? DEFAULT_LIMIT : Number(opts.limit);
  if (!query?.trim() || !Number.isInteger(limit) || limit < 1) {
    err.write(`usage:\n${TRACE_USAGE}\n`);
    return 2;
  }
  if (snapshot.history === false) {
    err.write('sendas trace: the delivery history is off (history: false in the configuration): nothing is kept to search\n');
    return 1;
  }
  // SQLite's native module only for this command: every other command starts without loading it
  const { HISTORY_FILE, findEvents, oldestEvent, openForReading } = await import('../history/db.js');
  const path = join(snapshot.stateDir, HISTORY_FILE);
  const db = openForReading(path);
  if (!db) {
    err.write(`sendas trace: no delivery history at ${path} yet (the relay writes it once it has handled a message)\n`);
    return 1;
  }
  try {
    // under log.redact the history holds hashed addresses: the query is hashed the same way
    const key = snapshot.log.redact ? redactKey(snapshot.stateDir, false) : undefined;
    const q = key ? new Redactor(key).text(query) : query;
    const messages = groupByMessage(findEvents(db, q, limit));
    if (messages.length === 0) {
      const oldest = oldestEvent(db);
      err.write(`sendas trace: nothing found for ${query}; the history ${oldest ? `goes back to ${oldest}` : 'is empty'} (history.keep: ${Math.round(snapshot.history.keepMs / 86_400_000)}d)\n`);
      return 1;
    }
    out.write(opts.json ? `${JSON.stringify({ query, messages }, null, 2)}\n` : formatTrace(messages));
    return 0;
  } finally {
    db.close();
  }
}

/** Events grouped by queue entry, in the order each first appears. */
export function groupByMessage(events: readonly TraceEvent[]): TracedMessage[] {
  const byId = new Map<string, TracedMessage>();
  for (const e of events) {
    let m = byId.get(e.queueId);
    if (!m) byId.set(e.queueId, (m = { queueId: e.queueId, messageId: e.messageId, envelopeFrom: e.envelopeFrom, events: [], outcome: {} }));
    m.events.push(e);
    if (e.recipient !== undefined) m.outcome[e.recipient] = e;
  }
  return [...byId.values()];
}

const STANDS: Record<string, string> = {
  queued: 'waiting in the queue',
  deferred: 'waiting: another attempt follows',
  quota: "waiting for the account's quota",
  delivered: 'delivered',
  failed: 'failed',
  refused: 'refused',
  deleted: 'deleted from the queue',
};

/** The text answer: per message its ids and sender, every event a line, then where each recipient stands. */
export function formatTrace(messages: readonly TracedMessage[]): string {
  const lines: string[] = [];
  for (const m of messages) {
    lines.push(`queue id ${m.queueId}  Message-ID ${m.messageId ? `<${m.messageId}>` : '(none)'}  from <${m.envelopeFrom ?? ''}>`);
    for (const e of m.events) lines.push(`  ${eventLine(e)}`);
    lines.push('  outcome:');
    for (const [recipient, e] of Object.entries(m.outcome)) lines.push(`    ${recipient}: ${STANDS[e.event] ?? e.event}${e.reply ? ` (${e.reply})` : ''}`);
    lines.push('');
  }
  return `${lines.join('\n')}`;
}

function eventLine(e: TraceEvent): string {
  const parts = [e.at, e.event.padEnd(9), e.recipient ?? '-'];
  if (e.account) parts.push(`account ${e.account}`);
  if (e.host) parts.push(`host ${e.host}`);
  if (e.attempt !== undefined) parts.push(`attempt ${e.attempt}`);
  if (e.reply) parts.push(`reply "${e.reply}"`);
  if (e.kind) parts.push(`kind ${e.kind}`);
  if (e.fix) parts.push(`fix: ${e.fix}`);
  return parts.join('  ');
}
