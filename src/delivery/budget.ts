import type { DailyConfig } from '../config/types.js';

/**
 * An account's budgets over a rolling 24 hours (the provider's daily limits, `daily:`), decided
 * apart from doing: plain values in, plain values out, the time given. The use is counted in
 * one-minute buckets: a bucket counts until 24 hours and a minute after its *end*, so sendas
 * never frees room before the provider does (at worst two minutes late: under-use, never over-use).
 */

export const BUCKET_MS = 60_000;
export const WINDOW_MS = 86_400_000;
/** Hold after a provider's quota refusal when sendas' own budget can't say when room frees. */
export const HOLD_UNKNOWN_MS = 3_600_000;
/** How long an account runs fewer transactions after "too many connections". */
export const BACKOFF_MS = 60_000;
/** The first retry after "too many connections"; doubles per strike up to BACKOFF_MS. */
export const BACKOFF_RETRY_MS = 5_000;

export type BudgetName = 'messages' | 'recipients';
export const BUDGETS: readonly BudgetName[] = ['recipients', 'messages'];

/** Use started in the minute beginning at `at` (ms since the epoch). Oldest first in a list. */
export interface Bucket {
  readonly at: number;
  messages: number;
  recipients: number;
}

export interface Want {
  readonly messages: number;
  readonly recipients: number;
}

export type Room =
  | { readonly ok: true }
  /** `freeAt`: the earliest time the window has room for what was asked. */
  | { readonly ok: false; readonly budget: BudgetName; readonly used: number; readonly limit: number; readonly freeAt: number };

/**
 * A minute's slack after a bucket's end: sendas counts a message before its transaction, the
 * provider when the transaction ends; the slack covers the transaction itself.
 */
export const SLACK_MS = 60_000;

/** When a bucket stops counting. */
export function expiresAt(bucket: Bucket): number {
  return bucket.at + BUCKET_MS + SLACK_MS + WINDOW_MS;
}

/** Drops the buckets that no longer count (in place). */
export function prune(buckets: Bucket[], now: number): void {
  let i = 0;
  while (i < buckets.length && expiresAt(buckets[i]!) <= now) i++;
  if (i > 0) buckets.splice(0, i);
}

export function usage(buckets: readonly Bucket[], now: number): Want {
  let messages = 0;
  let recipients = 0;
  for (const b of buckets) {
    if (expiresAt(b) <= now) continue;
    messages += b.messages;
    recipients += b.recipients;
  }
  return { messages, recipients };
}

/**
 * Whether `want` fits every budget now, else which budget is in the way and when it will fit:
 * the budget that frees last, so a retry then fits both.
 */
export function roomFor(buckets: readonly Bucket[], daily: DailyConfig | undefined, want: Want, now: number): Room {
  if (!daily) return { ok: true };
  const used = usage(buckets, now);
  let worst: Room = { ok: true };
  for (const budget of BUDGETS) {
    const limit = daily[budget];
    if (limit === undefined) continue;
    // more than a whole day's budget (a Graph message can't be batched) needs an empty window
    const asked = Math.min(want[budget], limit);
    if (used[budget] + asked <= limit) continue;
    const freeAt = freesAt(buckets, budget, used[budget] + asked - limit, now);
    if (worst.ok || freeAt > worst.freeAt) worst = { ok: false, budget, used: used[budget], limit, freeAt };
  }
  return worst;
}

/** When buckets holding at least `need` of the budget have expired. */
function freesAt(buckets: readonly Bucket[], budget: BudgetName, need: number, now: number): number {
  let freed = 0;
  let last = now + WINDOW_MS + BUCKET_MS + SLACK_MS;
  for (const b of buckets) {
    const end = expiresAt(b);
    if (end <= now) continue;
    freed += b[budget];
    last = end;
    if (freed >= need) return end;
  }
  // more than the whole budget asked for (callers batch to avoid it): once everything has expired
  return last;
}

/** Counts `want` as started at `now` (in place). */
export function record(buckets: Bucket[], want: Want, now: number): void {
  const at = now - (now % BUCKET_MS);
  const last = buckets[buckets.length - 1];
  if (last && last.at === at) {
    last.messages += want.messages;
    last.recipients += want.recipients;
  } else if (last && last.at > at) {
    // the clock went back: count it in the newest bucket, which expires later (never early)
    last.messages += want.messages;
    last.recipients += want.recipients;
  } else {
    buckets.push({ at, messages: want.messages, recipients: want.recipients });
  }
}

/** Gives back what a send recorded at `at` did not use (the upstream took nothing). */
export function release(buckets: Bucket[], want: Want, at: number): void {
  const start = at - (at % BUCKET_MS);
  for (let i = buckets.length - 1; i >= 0; i--) {
    const b = buckets[i]!;
    if (b.at > start) continue;
    if (b.at < start) return;
    b.messages = Math.max(0, b.messages - want.messages);
    b.recipients = Math.max(0, b.recipients - want.recipients);
    return;
  }
}

/**
 * Recipients per upstream transaction: `max_recipients`, and never more than the whole daily
 * recipients budget, so a message with more recipients than a day allows goes out in batches
 * over several days instead of waiting for ever.
 */
export function batchSize(maxRecipients: number | undefined, daily: DailyConfig | undefined, pending: number): number {
  return Math.max(1, Math.min(pending, maxRecipients ?? Infinity, daily?.recipients ?? Infinity));
}

/** Crossing 80% of a budget is worth one warning (again once it has fallen below). */
export const WARN_AT = 0.8;

export function crossed(used: number, limit: number): boolean {
  return used >= limit * WARN_AT;
}

/** "too many connections" for an account: fewer transactions at once for a while. */
export interface Backoff {
  readonly until: number;
  /** Transactions allowed at once meanwhile. */
  readonly limit: number;
  /** Waves of refusals in a row, each while the last backoff still held: the retry waits longer each time. */
  readonly strikes: number;
  /** When the current wave began: refusals within BACKOFF_RETRY_MS of it are the same wave. */
  readonly waveAt: number;
}

/**
 * After a "too many connections" reply: the account runs one transaction fewer than were
 * running when it came (at least one) for BACKOFF_MS, and the refused entry is tried again in
 * seconds (5 s, doubling per wave of refusals in a row, at most BACKOFF_MS) rather than on the
 * queue's schedule. Refusals arriving together are one wave: each lowers the limit, none doubles the wait.
 */
export function backoffAfter(prev: Backoff | undefined, running: number, connections: number, now: number): { backoff: Backoff; retryAt: number } {
  const active = prev && prev.until > now ? prev : undefined;
  const sameWave = active !== undefined && now - active.waveAt < BACKOFF_RETRY_MS;
  const strikes = !active ? 1 : sameWave ? active.strikes : active.strikes + 1;
  const waveAt = sameWave ? active.waveAt : now;
  const limit = Math.max(1, Math.min(active?.limit ?? connections, running) - 1);
  const retryAt = now + Math.min(BACKOFF_RETRY_MS * 2 ** (strikes - 1), BACKOFF_MS);
  return { backoff: { until: now + BACKOFF_MS, limit, strikes, waveAt }, retryAt };
}

/** Transactions the account may run at once now. */
export function concurrency(connections: number, backoff: Backoff | undefined, now: number): number {
  return backoff && backoff.until > now ? Math.min(connections, backoff.limit) : connections;
}

/**
 * After the provider said its quota is used up: sendas sends nothing for the account until its
 * window frees room. With a known `daily` budget that is when the oldest use counted expires
 * (the provider counted more than sendas did, so each freed minute is worth one probe); without
 * one sendas can't know, so it waits HOLD_UNKNOWN_MS.
 */
export function holdAfterQuota(buckets: readonly Bucket[], daily: DailyConfig | undefined, now: number): number {
  if (daily) {
    for (const b of buckets) if (expiresAt(b) > now) return expiresAt(b);
  }
  return now + HOLD_UNKNOWN_MS;
}

/** "14:05 UTC" (with the date when not within the next 20 hours), for the reason a message waits. */
export function clockTime(ms: number, now: number): string {
  const d = new Date(ms);
  const day = ms - now > 20 * 3_600_000 ? `${d.toISOString().slice(0, 10)} ` : '';
  return `${day}${d.toISOString().slice(11, 16)} UTC`;
}
