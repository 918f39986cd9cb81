import type { ConfigSnapshot } from '../config/types.js';
import { RelayError, isRelayError } from '../errors/relay-error.js';
import { accountFor, type Account } from '../config/account.js';
import type { Logger } from '../log.js';
import { pendingRecipients, type QueueEntryMeta, type RecipientState } from '../queue/entry.js';
import type { QueueStore } from '../queue/store.js';
import type { SendOutcome } from '../transport/send.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import { systemClock, type Clock, type Timer } from './clock.js';
import { AccountBook } from './accounts.js';
import { backoffAfter, batchSize, holdAfterQuota } from './budget.js';
import { applyBatchOutcome, applyQuotaWait, applyUnusableAccount, concludeAt, concludeAttempt, type Conclusion } from './decide.js';
import { DueHeap } from './due-heap.js';
import { retryDelay } from './schedule.js';
import { formatAge } from '../config/duration.js';
import type { Route } from './failover.js';
import { FailoverRegistry, Lane } from './lane.js';
import type { RelayMetrics } from '../ops/metrics.js';
import type { FailureStatus, QueueDetail, ServerRoute } from '../ops/status.js';
import type { Trace } from '../history/trace.js';
import { identityLabel, type TraceEvent } from '../history/types.js';
import { batchEvents, expiredEvents, pendingEvents, type AttemptContext } from './trace-events.js';
import { RecentFailures } from './recent-failures.js';

/** Builds the failure notice for an entry; returns undefined when none is due. */
export type NoticeWriter = (meta: QueueEntryMeta, failed: RecipientState[], gaveUpAfter: string | undefined) => Promise<void>;

export interface QueueRunnerOptions {
  readonly store: QueueStore;
  readonly getSnapshot: () => ConfigSnapshot;
  readonly logger: Logger;
  /** Every account's budgets, hold and health (shared with passthrough); a private one (nothing kept on disk) by default. */
  readonly accounts?: AccountBook;
  readonly writeNotice: NoticeWriter;
  readonly metrics?: RelayMetrics;
  /** Time for due entries, retries, rates and cool-downs; the system's by default. */
  readonly clock?: Clock;
  /** One upstream transaction (queueTransport() in the relay; tests give their own). */
  readonly transport: QueueTransport;
  /** The message trace: a line and a history row per recipient and attempt. */
  readonly trace?: Trace;
}

export interface QueueTransport {
  send(meta: QueueEntryMeta, account: Account, envelope: UpstreamEnvelope, route: Route): Promise<SendOutcome>;
  /** The server failed over: its primary is tried again only on a connection opened from now on. */
  primaryFailed(server: string): void;
}

interface Tracked {
  meta: QueueEntryMeta;
  dueAt: number;
  state: 'waiting' | 'ready' | 'running';
  /** `sendas queue delete` arrived while an attempt was running. */
  deleteAfterAttempt?: boolean;
}

/**
 * Delivers queue entries: each due entry waits in its account's line; lines are served
 * round-robin with at most the account's `connections` transactions each, so one slow account never starves
 * the others. The account is looked up in the current config at every attempt, so a rotated
 * password or a moved server applies to messages already queued.
 */
export class QueueRunner {
  private readonly tracked = new Map<string, Tracked>();
  /** Every account's lane, kept while the relay runs: its rate window and failover outlive a quiet spell. */
  private readonly lanes = new Map<string, Lane>();
  /** The lanes with entries due, served round-robin. */
  private readonly busy = new Map<string, Lane>();
  private readonly failovers = new FailoverRegistry();
  private readonly attempts = new Set<Promise<void>>();
  /** Waiting entries by due time; a copy is current while its entry still waits for that time. */
  private readonly waiting = new DueHeap<Tracked>((t, at) => t.state === 'waiting' && t.dueAt === at && this.tracked.get(t.meta.id) === t);
  private timer: Timer | undefined;
  private timerAt = Infinity;
  private stopped = false;
  private readonly clock: Clock;
  private readonly transport: QueueTransport;
  readonly accounts: AccountBook;
  private readonly failures = new RecentFailures();

  constructor(private readonly opts: QueueRunnerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.transport = opts.transport;
    this.accounts = opts.accounts ?? new AccountBook(opts.logger);
    // a connection lease granted (or Redis gone or back): a full lane may start more
    this.accounts.onConnectionsChange(() => this.pump());
  }

  /** Picks up every entry left in the queue (after a restart or a crash). */
  async start(): Promise<number> {
    const metas = await this.opts.store.list('active');
    for (const meta of metas) this.track(meta);
    this.pump();
    return metas.length;
  }

  /** A newly accepted entry: due now. */
  enqueue(meta: QueueEntryMeta): void {
    if (this.stopped) return; // picked up from disk at the next start
    this.track(meta);
    this.pump();
  }

  /**
   * Makes an entry due now (sendas queue retry). An account held after a provider's quota
   * refusal is tried again too: ops asking for it know better (sendas' own budget still holds).
   */
  retryNow(meta: QueueEntryMeta): void {
    const lane = this.lanes.get(this.lineKey(this.opts.getSnapshot(), meta));
    if (lane) lane.account.heldUntil = 0;
    const t = this.tracked.get(meta.id);
    if (t) {
      if (t.state === 'waiting') this.wait(t, this.clock.now());
    } else {
      this.track(meta);
    }
    this.pump();
  }

  /** Forgets an entry (sendas queue delete). Returns false when an attempt is running: it is deleted after. */
  forget(id: string): boolean {
    const t = this.tracked.get(id);
    if (!t) return true;
    this.traceAll(pendingEvents(t.meta, 'deleted', undefined, this.traceContext(t.meta, undefined, undefined)));
    if (t.state === 'running') {
      t.deleteAfterAttempt = true;
      return false;
    }
    this.tracked.delete(id);
    for (const lane of this.busy.values()) lane.remove(id);
    return true;
  }

  get size(): number {
    return this.tracked.size;
  }

  /** Queue depth, oldest age and per-server counts, for /metrics and /status. */
  stats(now = this.clock.now()): { depth: number; oldestAgeSeconds: number; byServer: Record<string, { queued: number; oldestAgeSeconds: number }> } {
    let oldest = now;
    const byServer: Record<string, { queued: number; oldestAgeSeconds: number }> = {};
    for (const { meta } of this.tracked.values()) {
      const received = Date.parse(meta.receivedAt);
      oldest = Math.min(oldest, received);
      const entry = (byServer[meta.serverName] ??= { queued: 0, oldestAgeSeconds: 0 });
      entry.queued++;
      entry.oldestAgeSeconds = Math.max(entry.oldestAgeSeconds, Math.round((now - received) / 1000));
    }
    return { depth: this.tracked.size, oldestAgeSeconds: Math.round((now - oldest) / 1000), byServer };
  }

  /** What waits after a failed attempt or for its account's quota, by that reason, and the failed area's size: for /status. */
  detail(): QueueDetail {
    const deferred: Record<string, number> = {};
    for (const { meta } of this.tracked.values()) {
      // a quota wait is no attempt, yet it is why the entry waits
      if (meta.lastError) deferred[meta.lastError.kind] = (deferred[meta.lastError.kind] ?? 0) + 1;
    }
    return { deferred, failed: this.opts.store.failedCount };
  }

  /** The last failed or deferred attempts, newest first (for /status). */
  recentFailures(): FailureStatus[] {
    return this.failures.list();
  }

  /** Per server of the current config that has sent since its hosts were last configured: the host in use and since when (for /status and the route metric). */
  routes(): Record<string, ServerRoute> {
    const routes: Record<string, ServerRoute> = {};
    for (const server of this.opts.getSnapshot().servers) {
      const state = this.failovers.peek(server)?.inUse();
      if (!state) continue;
      routes[server.name] = { host: state.route.host, port: state.route.port, role: state.route.alternate ? 'alternate' : 'primary', since: state.since };
    }
    return routes;
  }

  /** Stops starting attempts; waits up to `graceMs` for running ones. Unfinished entries stay queued on disk. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    let timer: Timer | undefined;
    await Promise.race([Promise.allSettled([...this.attempts]), new Promise<void>((resolve) => (timer = this.clock.setTimer(resolve, graceMs)))]);
    timer?.cancel();
  }

  private track(meta: QueueEntryMeta): void {
    const t: Tracked = { meta, dueAt: 0, state: 'waiting' };
    this.tracked.set(meta.id, t);
    this.wait(t, meta.nextAttemptAt ? Date.parse(meta.nextAttemptAt) : this.clock.now());
  }

  private wait(t: Tracked, dueAt: number): void {
    t.state = 'waiting';
    t.dueAt = Number.isNaN(dueAt) ? this.clock.now() : dueAt;
    this.waiting.push(t, t.dueAt);
  }

  /** Moves due entries into their account's line, starts what may start, and sets the timer for the next one. */
  private pump(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    const snapshot = this.opts.getSnapshot();
    for (const t of this.waiting.takeDue(now)) {
      if (t.state !== 'waiting') continue; // the same due time pushed twice
      t.state = 'ready';
      const lane = this.laneOf(this.lineKey(snapshot, t.meta));
      lane.push(t.meta.id);
      this.busy.set(lane.key, lane);
    }
    this.dispatch();
    const next = this.waiting.nextAt();
    if (next < this.timerAt || this.timer === undefined) {
      this.timer?.cancel();
      this.timer = undefined;
      this.timerAt = Infinity;
      if (next !== Infinity) {
        this.timerAt = next;
        this.timer = this.clock.setTimer(() => {
          this.timer = undefined;
          this.timerAt = Infinity;
          this.pump();
        }, next - now);
      }
    }
  }

  /** Round-robin over the account lines: one start per line per round, up to each line's limit. */
  private dispatch(): void {
    let started = true;
    while (started && !this.stopped) {
      started = false;
      for (const [key, lane] of this.busy) {
        if (lane.waiting === 0) {
          this.busy.delete(key);
          // an entry's own lane (its account could not be resolved) is not kept
          if (lane.running === 0 && key.startsWith(UNRESOLVED)) this.lanes.delete(key);
          continue;
        }
        if (lane.running >= lane.limit(this.clock.now())) continue;
        const id = lane.take()!;
        const t = this.tracked.get(id);
        if (!t || t.state !== 'ready') continue;
        started = true;
        lane.begin();
        t.state = 'running';
        const attempt = this.attempt(t, lane)
          .catch((err: unknown) => {
            // most often the entry's new state could not be written (a full disk): the next attempt
            // follows queue.retry like any deferral, so a queue of thousands does not retry every minute
            const delay = retryDelay(t.meta.attempts, this.opts.getSnapshot().queue.retryMs);
            const code = (err as NodeJS.ErrnoException).code;
            this.opts.logger.error({ id, err: { message: (err as Error).message, code }, retryInMs: delay }, `queue attempt failed unexpectedly; retrying in ${formatAge(delay)}`);
            t.dueAt = this.clock.now() + delay;
          })
          .finally(() => {
            lane.end();
            if (lane.running === 0 && lane.waiting === 0 && key.startsWith(UNRESOLVED)) this.lanes.delete(key);
            this.attempts.delete(attempt);
            if (t.deleteAfterAttempt) {
              this.tracked.delete(id);
              void this.opts.store.remove(id);
            } else if (this.tracked.get(id) === t) {
              this.wait(t, t.dueAt);
            }
            this.pump();
          });
        this.attempts.add(attempt);
      }
    }
  }

  private lineKey(snapshot: ConfigSnapshot, meta: QueueEntryMeta): string {
    const account = this.accountOf(snapshot, meta);
    if (isRelayError(account)) return `${UNRESOLVED}${meta.id}`;
    this.laneOf(account.key).see(account);
    return account.key;
  }

  private laneOf(key: string): Lane {
    let lane = this.lanes.get(key);
    if (!lane) this.lanes.set(key, (lane = new Lane(key, this.failovers, this.accounts.of(key))));
    return lane;
  }

  private accountOf(snapshot: ConfigSnapshot, meta: QueueEntryMeta): Account | RelayError {
    if (meta.identity === null) return accountFor(snapshot, undefined);
    const identity = snapshot.identitiesByName.get(meta.identity.name);
    if (!identity || identity.kind !== meta.identity.kind) {
      return new RelayError(
        'config',
        { code: 451, enhanced: '4.3.5' },
        `${meta.identity.kind} "${meta.identity.name}" is no longer in the configuration; add it back, or delete the message with sendas queue delete ${meta.id}`,
      );
    }
    return accountFor(snapshot, identity);
  }

  private async attempt(t: Tracked, lane: Lane): Promise<void> {
    const { meta } = t;
    const snapshot = this.opts.getSnapshot();
    const started = performance.now();
    const account = this.accountOf(snapshot, meta);

    if (isRelayError(account)) {
      meta.attempts++;
      meta.nextAttemptAt = undefined;
      const deferred = applyUnusableAccount(meta, account, this.clock.now());
      this.opts.metrics?.failed.inc({ reason: deferred.kind, server: meta.serverName, outcome: 'deferred' });
      this.logAttempt(meta, undefined, undefined, 'deferred', started, { ...deferred.toLog() });
      if (meta.lastError) this.failures.record({ queueId: meta.id, result: 'deferred', recipients: pendingRecipients(meta).map((r) => r.address), identity: identityLabel(meta.identity), server: meta.serverName }, meta.lastError);
      this.traceAll(pendingEvents(meta, 'deferred', deferred, this.traceContext(meta, undefined, undefined)));
      await this.conclude(t, snapshot);
      return;
    }
    // a reload may have moved the entry to another account since it was lined up
    const own = account.key === lane.key ? lane : this.laneOf(account.key);
    own.see(account);
    const state = own.account;
    const now = this.clock.now();
    if (state.heldUntil > now && state.heldBecause) {
      // the provider said the account's quota is used up: nothing goes until its window frees
      await this.waitForQuota(t, account, state.heldBecause, state.heldUntil);
      return;
    }
    meta.attempts++;
    meta.nextAttemptAt = undefined;
    const pending = pendingRecipients(meta);
    // Graph delivers to the message's headers, not to an envelope: batches would send header recipients the message again
    const size = account.server.type === 'graph' ? pending.length : batchSize(account.server.maxRecipients, account.server.daily, pending.length);
    let retryAt: number | undefined;
    for (let i = 0; i < pending.length; i += size) {
      if (this.stopped) break;
      const batch = pending.slice(i, i + size);
      const want = { messages: 1, recipients: batch.length };
      // no rate slot for what the budget can't take anyway
      const full = state.room(account, want, this.clock.now());
      // with cluster: the shared window counts the send until its reply (delivery/shared-rate.ts)
      const slot = full ? undefined : await own.rate(account)?.acquire(this.clock);
      // counted, and the count on disk, before the transaction starts: a crash can't let the account go over
      const counted = full ?? state.reserve(account, want, this.clock.now());
      // a promise only with `cluster:`: one relay's path stays as it was, without an extra turn
      const reserved = counted instanceof Promise ? await counted : counted;
      if (reserved && 'error' in reserved) {
        slot?.settle();
        if (i === 0) meta.attempts--; // nothing was tried: waiting for the quota is not an attempt
        await this.waitForQuota(t, account, reserved.error, reserved.freeAt);
        return;
      }
      if (reserved) await state.commit();
      let outcome: SendOutcome;
      try {
        outcome = await this.sendBatch(meta, account, own, batch, started);
      } finally {
        slot?.settle();
      }
      if (reserved && !outcome.ok) state.giveBack(reserved.reservation);
      else if (reserved && outcome.ok && outcome.refused.length > 0) state.giveBack({ want: { messages: 0, recipients: outcome.refused.length }, at: reserved.reservation.at });
      if (!outcome.ok && outcome.error.account) {
        retryAt = this.react(account, own, outcome.error);
        break;
      }
      // each batch's outcome is on disk before the next one: a recipient that got the message is never
      // sent it again. After the last batch conclude() writes the entry's new state (or deletes it when
      // every recipient has it): writing it here too would cost an fsync for nothing (a crash in between
      // re-delivers, the duplicate window README describes, never a loss)
      const last = i + size >= pending.length;
      if (!last && !meta.recipients.every((r) => r.status === 'delivered')) await this.opts.store.update(meta);
    }
    await this.conclude(t, snapshot, retryAt);
  }

  /**
   * What a provider's reply means for the whole account (RelayError.account): `backoff` — fewer
   * transactions at once for a while and this entry again in seconds; `hold` — nothing for the
   * account until its window frees. Returns when this entry is tried again.
   */
  private react(account: Account, lane: Lane, error: RelayError): number {
    const now = this.clock.now();
    const state = lane.account;
    if (error.account === 'backoff') {
      const { backoff, retryAt } = backoffAfter(state.backoff, lane.running, account.server.connections, now);
      if (!state.backoff || state.backoff.until <= now || state.backoff.limit !== backoff.limit) {
        this.opts.logger.warn({ account: account.key, connections: backoff.limit, forSeconds: Math.round((backoff.until - now) / 1000), ...error.toLog() }, `account ${account.key} backs off: at most ${backoff.limit} transaction${backoff.limit === 1 ? '' : 's'} at once for a while`);
      }
      state.backoff = backoff;
      return retryAt;
    }
    const until = holdAfterQuota(state.buckets, account.server.daily, now);
    if (state.heldUntil <= now) {
      this.opts.logger.warn({ account: account.key, until: new Date(until).toISOString(), ...error.toLog() }, `account ${account.key} is held: the provider says its quota is used up; its messages wait`);
    }
    state.heldUntil = until;
    state.heldBecause = error;
    return until;
  }

  /** The entry waits for its account's quota: reason quota, next attempt when room frees, on disk. */
  private async waitForQuota(t: Tracked, account: Account, error: RelayError, until: number): Promise<void> {
    const { meta } = t;
    if (t.deleteAfterAttempt) return;
    const conclusion = applyQuotaWait(meta, error, until, this.clock.now());
    t.dueAt = (conclusion as Extract<Conclusion, { kind: 'retry' }>).at;
    this.opts.logger.info({ id: meta.id, result: 'quota', identity: identityLabel(meta.identity), server: account.server.name, account: account.key, next: meta.nextAttemptAt, ...error.toLog() }, 'delivery waits for the account quota');
    this.traceAll(pendingEvents(meta, 'quota', error, this.traceContext(meta, account, undefined)));
    await this.opts.store.update(meta);
  }

  private async sendBatch(meta: QueueEntryMeta, account: Account, lane: Lane, batch: RecipientState[], started: number): Promise<SendOutcome> {
    const failover = lane.failover(account.server);
    const envelope = { from: meta.envelope.originalFrom === '' ? '' : account.address, to: batch.map((r) => r.address), eightBit: meta.envelope.eightBit };
    for (const r of batch) r.attempts++;
    const state = lane.account;
    state.inUse++;

    const sentAt = this.clock.now();
    let route = failover.routeAt(sentAt);
    let outcome: SendOutcome;
    try {
      outcome = await this.transport.send(meta, account, envelope, route);
      const turn = failover.afterSend(route, outcome, sentAt, this.clock.now());
      if (turn === 'use-alternate' && !outcome.ok) {
        this.transport.primaryFailed(account.server.name);
        const primary = route;
        route = failover.alternate()!;
        this.opts.logger.warn({ server: account.server.name, primary: `${primary.host}:${primary.port}`, alternate: `${route.host}:${route.port}`, ...outcome.error.toLog() }, 'primary unreachable: using the alternate');
        outcome = await this.transport.send(meta, account, envelope, route);
      } else if (turn === 'back-to-primary') {
        this.opts.logger.info({ server: account.server.name, primary: `${route.host}:${route.port}` }, 'primary reachable again: back from the alternate');
      }
    } finally {
      state.inUse--;
    }
    if (outcome.ok) state.succeeded(this.clock.now());
    else state.failed(outcome.error, this.clock.now());

    const result = applyBatchOutcome(meta, batch, outcome, route.host, this.clock.now());
    this.traceAll(batchEvents(meta, batch, outcome, this.traceContext(meta, account, route)));
    const server = account.server.name;
    const noted = { queueId: meta.id, identity: identityLabel(meta.identity), server, account: account.key };
    if (!outcome.ok && meta.lastError) this.failures.record({ ...noted, result: result === 'failed' ? 'failed' : 'deferred', recipients: batch.map((r) => r.address) }, meta.lastError);
    else if (outcome.ok) {
      for (const x of outcome.refused) {
        const r = batch.find((b) => b.address.toLowerCase() === x.recipient.toLowerCase());
        if (r?.lastError) this.failures.record({ ...noted, result: r.status === 'failed' ? 'failed' : 'deferred', recipients: [r.address] }, r.lastError);
      }
    }
    if (!outcome.ok) {
      const { error } = outcome;
      this.opts.metrics?.failed.inc({ reason: error.kind, server, outcome: result });
      this.logAttempt(meta, account, route, result, started, { recipients: batch.length, ...error.toLog() });
      return outcome;
    }
    const accepted = batch.filter((r) => r.status === 'delivered').length;
    if (accepted > 0) {
      this.opts.metrics?.relayed.inc({ server });
      this.opts.metrics?.deliveryLatency.observe({ server }, (this.clock.now() - Date.parse(meta.receivedAt)) / 1000);
    }
    for (const x of outcome.refused) this.opts.metrics?.failed.inc({ reason: x.error.kind, server, outcome: x.error.temporary ? 'deferred' : 'failed' });
    this.logAttempt(meta, account, route, result, started, {
      recipients: batch.length,
      accepted,
      // every recipient refused at RCPT TO: there was no DATA, the upstream's reply is the refusal's
      upstreamReply: outcome.upstreamReply || outcome.refused[0]?.error.upstreamReply,
      ...(outcome.refused.length ? { refused: outcome.refused.map((x) => ({ recipient: x.recipient, ...x.error.toLog() })) } : {}),
    });
    return outcome;
  }

  /** Carries out the conclusion: retry later (the new state on disk), or done (removed, or moved to failed/ with a notice). */
  private async conclude(t: Tracked, snapshot: ConfigSnapshot, retryAt?: number): Promise<void> {
    const { meta } = t;
    if (t.deleteAfterAttempt) return;
    const now = this.clock.now();
    const wasPending = new Set(pendingRecipients(meta).map((r) => r.address));
    const conclusion = retryAt === undefined ? concludeAttempt(meta, now, snapshot.queue) : concludeAt(meta, retryAt, now, snapshot.queue);
    if (conclusion.kind === 'done' && conclusion.gaveUpAfter !== undefined) this.traceAll(expiredEvents(meta, wasPending, this.traceContext(meta, undefined, undefined)));
    if (conclusion.kind === 'retry') {
      t.dueAt = conclusion.at;
      await this.opts.store.update(meta);
      return;
    }
    this.tracked.delete(meta.id);
    const { failed } = conclusion;
    if (failed.length === 0) {
      // the account's delivery slot is free once the upstream has answered: the deletion goes on beside the next attempt
      void this.opts.store.remove(meta.id).then(
        () => this.opts.logger.debug({ id: meta.id }, 'removed from the queue: every recipient has the message'),
        (err: unknown) => this.opts.logger.error({ id: meta.id, err: { message: (err as Error).message } }, 'could not remove a delivered message from the queue; it is sent again after a restart'),
      );
      return;
    }
    await this.opts.store.moveToFailed(meta);
    this.opts.logger.warn(
      { id: meta.id, result: 'failed', identity: identityLabel(meta.identity), failed: failed.map((r) => ({ recipient: r.address, reason: r.lastError?.reason })), delivered: meta.recipients.length - failed.length },
      `message failed for ${failed.length} recipient${failed.length === 1 ? '' : 's'}; moved to the failed area`,
    );
    await this.opts.writeNotice(meta, failed, conclusion.gaveUpAfter);
  }

  private traceContext(meta: QueueEntryMeta, account: Account | undefined, route: Route | undefined): AttemptContext {
    return {
      at: new Date(this.clock.now()).toISOString(),
      account: account?.key,
      server: account?.server.name ?? meta.serverName,
      host: route ? `${route.host}:${route.port}` : undefined,
      identity: identityLabel(meta.identity),
    };
  }

  private traceAll(events: readonly TraceEvent[]): void {
    const { trace } = this.opts;
    if (trace) for (const e of events) trace.record(e);
  }

  private logAttempt(meta: QueueEntryMeta, account: Account | undefined, route: Route | undefined, result: string, started: number, fields: Record<string, unknown>): void {
    const level = result === 'delivered' ? 'info' : 'warn';
    this.opts.logger[level](
      {
        id: meta.id,
        result,
        attempt: meta.attempts,
        identity: identityLabel(meta.identity),
        server: account?.server.name ?? meta.serverName,
        upstreamLogin: account && account.server.auth !== 'none' ? account.username : undefined,
        host: route ? `${route.host}:${route.port}${route.alternate ? ' (alternate)' : ''}` : undefined,
        fromBefore: meta.fromBefore,
        fromAfter: meta.fromAfter,
        size: meta.size,
        durationMs: Math.round(performance.now() - started),
        ...fields,
      },
      `delivery attempt: ${result}`,
    );
  }
}

/** Line keys of entries whose account can't be resolved: each waits alone. */
const UNRESOLVED = 'unresolved/';

