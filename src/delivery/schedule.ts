import type { QueueConfig } from '../config/types.js';
import type { QueueEntryMeta } from '../queue/entry.js';

/** The wait after the Nth failed attempt (1-based): retry[N-1], the last one repeating. */
export function retryDelay(attemptsSoFar: number, retryMs: readonly number[]): number {
  const i = Math.min(Math.max(attemptsSoFar, 1), retryMs.length) - 1;
  return retryMs[i]!;
}

export type AttemptVerdict =
  /** Every recipient has a final state. */
  | { readonly kind: 'finished'; readonly failed: number; readonly delivered: number }
  /** Some recipients wait for another attempt. */
  | { readonly kind: 'retry'; readonly at: Date }
  /** Some recipients are still pending but the message is older than max_age: they fail now. */
  | { readonly kind: 'expired' };

/**
 * What happens to an entry after an attempt. Pure: the runner applies it. A message whose next
 * attempt would fall after max_age gets one last attempt at max_age rather than being kept longer.
 */
export function verdictAfterAttempt(meta: QueueEntryMeta, now: Date, queue: QueueConfig): AttemptVerdict {
  const pending = meta.recipients.filter((r) => r.status === 'pending').length;
  if (pending === 0) {
    return {
      kind: 'finished',
      failed: meta.recipients.filter((r) => r.status === 'failed').length,
      delivered: meta.recipients.filter((r) => r.status === 'delivered').length,
    };
  }
  const expiresAt = Date.parse(meta.requeuedAt ?? meta.receivedAt) + queue.maxAgeMs;
  if (now.getTime() >= expiresAt) return { kind: 'expired' };
  const at = Math.min(now.getTime() + retryDelay(meta.attempts, queue.retryMs), expiresAt);
  return { kind: 'retry', at: new Date(at) };
}
