import type { RelayError } from '../errors/relay-error.js';
import type { TraceEvent, TraceEventKind } from '../history/types.js';
import type { QueueEntryMeta, RecipientState, StoredError } from '../queue/entry.js';
import type { SendOutcome } from '../transport/send.js';

/**
 * The trace events of a queue entry, apart from recording them: given the entry, what happened
 * and when, the events per recipient. Pure, like decide.ts, so tested with plain values.
 */

export interface AttemptContext {
  readonly at: string;
  /** The account's key; the entry's server when the account could not be resolved. */
  readonly account: string | undefined;
  readonly server: string;
  /** host:port the attempt went to. */
  readonly host: string | undefined;
  readonly identity: string;
}

/** One event per recipient of a batch, after applyBatchOutcome set their states. */
export function batchEvents(meta: QueueEntryMeta, batch: readonly RecipientState[], outcome: SendOutcome, ctx: AttemptContext): TraceEvent[] {
  if (!outcome.ok) return batch.map((r) => event(meta, r, outcome.error.temporary ? 'deferred' : 'failed', errorFields(outcome.error), ctx));
  return batch.map((r) => {
    if (r.status === 'delivered') return event(meta, r, 'delivered', { reply: outcome.upstreamReply }, ctx);
    // refused at RCPT TO: its reply is the stored error's (temporary: still pending, another attempt follows)
    return event(meta, r, r.status === 'failed' ? 'failed' : 'deferred', r.lastError ? storedFields(r.lastError) : {}, ctx);
  });
}

/** The recipients still waiting, each with the same reason (unusable account, quota, a deletion). */
export function pendingEvents(meta: QueueEntryMeta, kind: TraceEventKind, error: RelayError | undefined, ctx: AttemptContext): TraceEvent[] {
  return meta.recipients.filter((r) => r.status === 'pending').map((r) => event(meta, r, kind, error ? errorFields(error) : {}, ctx));
}

/** Recipients that were pending before the conclusion and are failed after it: max_age gave up on them. */
export function expiredEvents(meta: QueueEntryMeta, wasPending: ReadonlySet<string>, ctx: AttemptContext): TraceEvent[] {
  return meta.recipients.filter((r) => r.status === 'failed' && wasPending.has(r.address)).map((r) => event(meta, r, 'failed', r.lastError ? storedFields(r.lastError) : {}, ctx));
}

type ErrorPart = Pick<TraceEvent, 'reply' | 'kind' | 'fix'>;

function errorFields(err: RelayError): ErrorPart {
  return { reply: err.upstreamReply ?? `${err.status.code} ${err.replyText}`, kind: err.kind, ...(err.fix ? { fix: err.fix } : {}) };
}

function storedFields(e: StoredError): ErrorPart {
  return { reply: e.upstreamReply ?? `${e.code} ${e.enhanced} ${e.reason}`, kind: e.kind, ...(e.fix ? { fix: e.fix } : {}) };
}

function event(meta: QueueEntryMeta, r: RecipientState, kind: TraceEventKind, fields: ErrorPart, ctx: AttemptContext): TraceEvent {
  return {
    at: ctx.at,
    event: kind,
    queueId: meta.id,
    ...(meta.messageId !== undefined ? { messageId: meta.messageId } : {}),
    envelopeFrom: meta.envelope.originalFrom,
    recipient: r.address,
    identity: ctx.identity,
    ...(ctx.account !== undefined ? { account: ctx.account } : {}),
    server: ctx.server,
    ...(ctx.host !== undefined ? { host: ctx.host } : {}),
    // a wait for quota is not an attempt; a deletion neither
    ...(kind === 'quota' || kind === 'deleted' ? {} : { attempt: meta.attempts }),
    ...fields,
  };
}
