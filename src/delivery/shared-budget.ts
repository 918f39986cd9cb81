import type { SharedBudgets } from '../cluster/budgets.js';
import type { DailyConfig } from '../config/types.js';
import { BUCKET_MS, prune, record, roomFor, usage, type Bucket, type Room, type Want } from './budget.js';

/** What a reservation came to, before delivery turns a refusal into its RelayError. */
export type SharedOutcome =
  | { readonly kind: 'counted' }
  /** Every replica's use leaves no room: `room` says which budget and when it frees. */
  | { readonly kind: 'full'; readonly room: Extract<Room, { ok: false }> }
  /** Redis is away: the caller counts against its local share. */
  | { readonly kind: 'away' };

/** Between reservations /status and metrics ask Redis again at most this often. */
const PEEK_EVERY_MS = 5_000;

/**
 * One account's budgets as every replica counts them together (`cluster:`). The account's own
 * buckets (`buckets`, state_dir/budgets) go on counting this replica's part, so they survive a
 * Redis restart and serve as the local share while Redis is away; each time Redis answers again
 * (and at the first reservation) the replica's part in Redis is replaced by them, which adds what
 * it counted meanwhile and puts it back after Redis lost everything. The account's calls to
 * Redis go one at a time, so such a replacement never misses a reservation in flight.
 */
export class SharedBudgetPart {
  private synced = -1;
  private tail: Promise<unknown> = Promise.resolve();
  /** The use every replica counted, as Redis last said it. */
  private use: (Want & { at: number }) | undefined;
  private peeking = false;
  /** The last refusal: room() answers with it until its time, without asking Redis. */
  full: { room: Extract<Room, { ok: false }>; freeAt: number } | undefined;

  constructor(
    private readonly budgets: SharedBudgets,
    private readonly key: string,
    private readonly buckets: () => Bucket[],
  ) {}

  get up(): boolean {
    return this.budgets.cluster.up;
  }

  /** The limits this replica keeps to alone while Redis is away: each divided by the replicas last seen. */
  share(daily: DailyConfig): DailyConfig {
    const { cluster } = this.budgets;
    return {
      messages: daily.messages === undefined ? undefined : cluster.share(daily.messages),
      recipients: daily.recipients === undefined ? undefined : cluster.share(daily.recipients),
    };
  }

  /** Counts `want` in Redis (and in the account's own buckets) when every replica's use leaves room. */
  reserve(daily: DailyConfig, want: Want, now: number): Promise<SharedOutcome> {
    return this.serial(async () => {
      if (this.synced !== this.budgets.generation && !(await this.doSync(now))) return { kind: 'away' };
      const reply = await this.budgets.reserve(this.key, now - (now % BUCKET_MS), want, daily, now);
      if (!reply) {
        this.synced = -1;
        return { kind: 'away' };
      }
      if (!reply.ok) {
        const shared = reply.buckets.map(([at, messages, recipients]) => ({ at, messages, recipients }));
        const room = roomFor(shared, daily, want, now);
        // the script and roomFor decide alike; should they ever not, the message waits a minute rather than go over
        const refused: Extract<Room, { ok: false }> = room.ok ? { ok: false, budget: daily.recipients !== undefined ? 'recipients' : 'messages', used: usage(shared, now).recipients, limit: daily.recipients ?? daily.messages ?? 0, freeAt: now + BUCKET_MS } : room;
        this.full = { room: refused, freeAt: refused.freeAt };
        this.use = { ...usage(shared, now), at: now };
        return { kind: 'full', room: refused };
      }
      this.full = undefined;
      record(this.buckets(), want, now);
      this.use = { messages: reply.messages, recipients: reply.recipients, at: now };
      return { kind: 'counted' };
    });
  }

  /** What a reservation did not use, out of this replica's part in Redis (the own buckets are the caller's). */
  giveBack(want: Want, at: number): void {
    this.full = undefined;
    void this.serial(async () => {
      if (!(await this.budgets.giveBack(this.key, at - (at % BUCKET_MS), want))) this.synced = -1;
    });
  }

  /** Puts this replica's own count in Redis as its part (after an outage, at start). */
  sync(now: number): Promise<boolean> {
    return this.serial(() => this.doSync(now));
  }

  /** Every replica's use while Redis answers (asked again in the background when older than a few seconds), else undefined. */
  usage(now: number): Want | undefined {
    if (!this.up) return undefined;
    if ((!this.use || now - this.use.at >= PEEK_EVERY_MS) && !this.peeking) {
      this.peeking = true;
      void this.budgets
        .peek(this.key, now)
        .then((u) => {
          if (u) this.use = { ...u, at: now };
        })
        .finally(() => (this.peeking = false));
    }
    return this.use;
  }

  private async doSync(now: number): Promise<boolean> {
    const generation = this.budgets.generation;
    const own = this.buckets();
    prune(own, now);
    const use = await this.budgets.sync(this.key, own.map((b) => [b.at, b.messages, b.recipients] as const), now);
    if (!use) return false;
    this.synced = generation;
    this.use = { ...use, at: now };
    return true;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
