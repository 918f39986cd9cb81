import { formatAge } from '../config/duration.js';
import type { QueueConfig } from '../config/types.js';
import { deferredForm, type RelayError } from '../errors/relay-error.js';
import { pendingRecipients, type QueueEntryMeta, type RecipientState, type StoredError } from '../queue/entry.js';
import type { SendOutcome } from '../transport/send.js';
import { verdictAfterAttempt } from './schedule.js';

/**
 * The queue's decisions about an entry, apart from doing them: given an entry, an outcome and
 * the time, they set its recipients' states and its next attempt. No I/O and no clock of their
 * own; they change only the entry they are given (the runner's copy, written to disk after), so
 * they are tested with plain values.
 */

/** How one batch went, for the log line and the metrics. */
export type BatchResult = 'delivered' | 'partial' | 'deferred' | 'failed';

/** Applies a batch's outcome to its recipients: delivered, failed for good, or still pending with the reason. */
export function applyBatchOutcome(meta: QueueEntryMeta, batch: readonly RecipientState[], outcome: SendOutcome, host: string, now: number): BatchResult {
  const at = new Date(now).toISOString();
  if (!outcome.ok) {
    const error = stored(outcome.error, at, host);
    for (const r of batch) recordFailure(r, error, outcome.error.temporary);
    meta.lastError = error;
    return outcome.error.temporary ? 'deferred' : 'failed';
  }
  // the usual case has no refusals: no lookup table for it
  const refused = outcome.refused.length > 0 ? new Map(outcome.refused.map((x) => [x.recipient.toLowerCase(), x.error])) : undefined;
  for (const r of batch) {
    const error = refused?.get(r.address.toLowerCase());
    if (error) {
      recordFailure(r, stored(error, at, host), error.temporary);
    } else {
      r.status = 'delivered';
      r.deliveredAt = at;
      r.upstreamReply = outcome.upstreamReply;
      r.lastError = undefined;
    }
  }
  const first = outcome.refused[0]?.error;
  if (!first) return 'delivered';
  meta.lastError = stored(first, at, host);
  if (batch.some((r) => r.status === 'delivered')) return 'partial';
  // none got it: the batch waits if any refusal was temporary, else it failed
  return outcome.refused.some((x) => x.error.temporary) ? 'deferred' : 'failed';
}

/**
 * The entry's account can't be used now (identity removed, password missing): ops can fix that,
 * so its recipients wait, with the temporary form of the reason. Returns that form.
 */
export function applyUnusableAccount(meta: QueueEntryMeta, err: RelayError, now: number): RelayError {
  const deferred = deferredForm(err);
  const error = stored(deferred, new Date(now).toISOString());
  for (const r of pendingRecipients(meta)) recordFailure(r, error, true);
  meta.lastError = error;
  return deferred;
}

export type Conclusion =
  /** Some recipients wait: the entry's next attempt is set. */
  | { readonly kind: 'retry'; readonly at: number }
  /** Every recipient has a final state; `failed` may be empty. `gaveUpAfter` when max_age ended it. */
  | { readonly kind: 'done'; readonly failed: RecipientState[]; readonly gaveUpAfter?: string };

/** After an attempt: the next attempt on the retry schedule, or done (expired recipients fail with a reason saying so). */
export function concludeAttempt(meta: QueueEntryMeta, now: number, queue: QueueConfig): Conclusion {
  const verdict = verdictAfterAttempt(meta, new Date(now), queue);
  if (verdict.kind === 'retry') {
    meta.nextAttemptAt = verdict.at.toISOString();
    return { kind: 'retry', at: verdict.at.getTime() };
  }
  let gaveUpAfter: string | undefined;
  if (verdict.kind === 'expired') {
    const at = new Date(now).toISOString();
    gaveUpAfter = `${formatAge(now - Date.parse(meta.receivedAt))} and ${meta.attempts} attempt${meta.attempts === 1 ? '' : 's'}`;
    for (const r of pendingRecipients(meta)) {
      r.status = 'failed';
      const last = r.lastError ?? meta.lastError;
      r.lastError = { ...(last ?? { kind: 'internal', code: 451, enhanced: '4.4.7', at }), reason: `gave up after ${gaveUpAfter}: ${last?.reason ?? 'no attempt succeeded'}` };
    }
  }
  const failed = meta.recipients.filter((r) => r.status === 'failed');
  if (failed.length > 0) meta.failedAt = new Date(now).toISOString();
  return gaveUpAfter === undefined ? { kind: 'done', failed } : { kind: 'done', failed, gaveUpAfter };
}

function recordFailure(r: RecipientState, error: StoredError, temporary: boolean): void {
  r.lastError = error;
  if (!temporary) r.status = 'failed';
}

function stored(err: RelayError, at: string, host?: string): StoredError {
  return { ...err.toLog(), at, ...(host ? { host } : {}) };
}

/**
 * The entry waits for its account's quota (sendas' own budget, or a provider's refusal that holds
 * the account): its pending recipients keep the quota reason and the entry's next attempt is when
 * room frees. Never a failure, and not the retry schedule: max_age does not end a wait for quota.
 */
export function applyQuotaWait(meta: QueueEntryMeta, err: RelayError, until: number, now: number): Conclusion {
  const error = stored(err, new Date(now).toISOString());
  for (const r of pendingRecipients(meta)) r.lastError = error;
  meta.lastError = error;
  return waitUntil(meta, until);
}

/** After an attempt whose failure says when to try again (an account backing off or held): then, whatever the schedule says. */
export function concludeAt(meta: QueueEntryMeta, at: number, now: number, queue: QueueConfig): Conclusion {
  if (pendingRecipients(meta).length === 0) return concludeAttempt(meta, now, queue);
  return waitUntil(meta, at);
}

function waitUntil(meta: QueueEntryMeta, at: number): Conclusion {
  meta.nextAttemptAt = new Date(at).toISOString();
  return { kind: 'retry', at };
}
