import type { Readable } from 'node:stream';
import type { ConfigSnapshot, ServerConfig } from '../config/types.js';
import { formatAge } from '../config/duration.js';
import { RelayError, isRelayError } from '../errors/relay-error.js';
import { accountFor, type Account } from '../config/account.js';
import type { Logger } from '../log.js';
import { pendingRecipients, type QueueEntryMeta, type RecipientState, type StoredError } from '../queue/entry.js';
import type { QueueStore } from '../queue/store.js';
import type { TransportPools } from '../transport/pools.js';
import type { UpstreamThread } from '../transport/upstream-thread.js';
import { DueHeap } from './due-heap.js';
import { FailoverState, isUnreachable, type Route } from './failover.js';
import { RateWindow } from './rate-limit.js';
import { verdictAfterAttempt } from './schedule.js';
import { deliverInThread, deliverNow, type DeliveryOutcome } from './send.js';
import type { RelayMetrics } from '../ops/metrics.js';

/** Builds the failure notice for an entry; returns undefined when none is due. */
export type NoticeWriter = (meta: QueueEntryMeta, failed: RecipientState[], gaveUpAfter: string | undefined) => Promise<void>;

export interface QueueRunnerOptions {
  readonly store: QueueStore;
  readonly getSnapshot: () => ConfigSnapshot;
  readonly pools: TransportPools;
  readonly logger: Logger;
  /** Concurrent upstream transactions per account: the pool size. */
  readonly maxPerAccount: number;
  readonly writeNotice: NoticeWriter;
  readonly metrics?: RelayMetrics;
  /** Sends messages held in memory from a worker thread (see UpstreamThread); without it, everything goes through `pools`. */
  readonly upstreamThread?: UpstreamThread;
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
 * round-robin with at most `maxPerAccount` transactions each, so one slow account never starves
 * the others. The account is looked up in the current config at every attempt, so a rotated
 * password or a moved server applies to messages already queued.
 */
export class QueueRunner {
  private readonly tracked = new Map<string, Tracked>();
  private readonly lines = new Map<string, string[]>();
  private readonly running = new Map<string, number>();
  private readonly failovers = new Map<string, { fingerprint: string; state: FailoverState }>();
  private readonly rates = new Map<string, { fingerprint: string; window: RateWindow }>();
  private readonly attempts = new Set<Promise<void>>();
  /** Waiting entries by due time; a copy is current while its entry still waits for that time. */
  private readonly waiting = new DueHeap<Tracked>((t, at) => t.state === 'waiting' && t.dueAt === at && this.tracked.get(t.meta.id) === t);
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private stopped = false;

  constructor(private readonly opts: QueueRunnerOptions) {}

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

  /** Makes an entry due now (sendas queue retry). */
  retryNow(meta: QueueEntryMeta): void {
    const t = this.tracked.get(meta.id);
    if (t) {
      if (t.state === 'waiting') this.wait(t, Date.now());
    } else {
      this.track(meta);
    }
    this.pump();
  }

  /** Forgets an entry (sendas queue delete). Returns false when an attempt is running: it is deleted after. */
  forget(id: string): boolean {
    const t = this.tracked.get(id);
    if (!t) return true;
    if (t.state === 'running') {
      t.deleteAfterAttempt = true;
      return false;
    }
    this.tracked.delete(id);
    for (const line of this.lines.values()) {
      const i = line.indexOf(id);
      if (i >= 0) line.splice(i, 1);
    }
    return true;
  }

  get size(): number {
    return this.tracked.size;
  }

  /** Queue depth, oldest age and per-server counts, for /metrics and /status. */
  stats(now = Date.now()): { depth: number; oldestAgeSeconds: number; byServer: Record<string, { queued: number; oldestAgeSeconds: number }> } {
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

  /** Stops starting attempts; waits up to `graceMs` for running ones. Unfinished entries stay queued on disk. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.attempts]), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    if (timer) clearTimeout(timer);
  }

  private track(meta: QueueEntryMeta): void {
    const t: Tracked = { meta, dueAt: 0, state: 'waiting' };
    this.tracked.set(meta.id, t);
    this.wait(t, meta.nextAttemptAt ? Date.parse(meta.nextAttemptAt) : Date.now());
  }

  private wait(t: Tracked, dueAt: number): void {
    t.state = 'waiting';
    t.dueAt = Number.isNaN(dueAt) ? Date.now() : dueAt;
    this.waiting.push(t, t.dueAt);
  }

  /** Moves due entries into their account's line, starts what may start, and sets the timer for the next one. */
  private pump(): void {
    if (this.stopped) return;
    const now = Date.now();
    const snapshot = this.opts.getSnapshot();
    for (const t of this.waiting.takeDue(now)) {
      if (t.state !== 'waiting') continue; // the same due time pushed twice
      t.state = 'ready';
      const key = this.lineKey(snapshot, t.meta);
      let line = this.lines.get(key);
      if (!line) this.lines.set(key, (line = []));
      line.push(t.meta.id);
    }
    this.dispatch();
    const next = this.waiting.nextAt();
    if (next < this.timerAt || this.timer === undefined) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.timerAt = Infinity;
      if (next !== Infinity) {
        this.timerAt = next;
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.timerAt = Infinity;
          this.pump();
        }, Math.max(0, next - now));
      }
    }
  }

  /** Round-robin over the account lines: one start per line per round, up to each line's limit. */
  private dispatch(): void {
    let started = true;
    while (started && !this.stopped) {
      started = false;
      for (const [key, line] of this.lines) {
        if (line.length === 0) {
          this.lines.delete(key);
          continue;
        }
        if ((this.running.get(key) ?? 0) >= this.opts.maxPerAccount) continue;
        const id = line.shift()!;
        const t = this.tracked.get(id);
        if (!t || t.state !== 'ready') continue;
        started = true;
        this.running.set(key, (this.running.get(key) ?? 0) + 1);
        t.state = 'running';
        const attempt = this.attempt(t)
          .catch((err: unknown) => {
            this.opts.logger.error({ id, err: { message: (err as Error).message } }, 'queue attempt failed unexpectedly; retrying in 1 minute');
            t.dueAt = Date.now() + 60_000;
          })
          .finally(() => {
            this.running.set(key, (this.running.get(key) ?? 1) - 1);
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
    return isRelayError(account) ? `unresolved/${meta.id}` : account.key;
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

  private async attempt(t: Tracked): Promise<void> {
    const { meta } = t;
    const snapshot = this.opts.getSnapshot();
    const started = performance.now();
    meta.attempts++;
    meta.nextAttemptAt = undefined;
    const account = this.accountOf(snapshot, meta);

    if (isRelayError(account)) {
      // the account can't be used now (identity removed, password missing): ops can fix it, so wait
      const temporary = new RelayError(account.kind, { code: 451, enhanced: account.status.enhanced.replace(/^5/, '4') }, account.message);
      for (const r of pendingRecipients(meta)) this.recordFailure(r, temporary, undefined, true);
      meta.lastError = stored(temporary);
      this.opts.metrics?.failed.inc({ reason: temporary.kind, server: meta.serverName, outcome: 'deferred' });
      this.logAttempt(meta, undefined, undefined, 'deferred', started, { ...temporary.toLog() });
    } else {
      const pending = pendingRecipients(meta);
      // Graph delivers to the message's headers, not to an envelope: batches would send header recipients the message again
      const batchSize = account.server.type === 'graph' ? pending.length : (account.server.maxRecipients ?? pending.length);
      for (let i = 0; i < pending.length; i += batchSize) {
        if (this.stopped) break;
        const batch = pending.slice(i, i + batchSize);
        await this.rateOf(account).acquire();
        await this.sendBatch(meta, account, batch, started);
        // each batch's outcome is on disk before the next one: a recipient that got the message is never
        // sent it again. After the last batch conclude() writes the entry's new state (or deletes it when
        // every recipient has it): writing it here too would cost an fsync for nothing (a crash in between
        // re-delivers, the duplicate window README describes, never a loss)
        const last = i + batchSize >= pending.length;
        if (!last && !meta.recipients.every((r) => r.status === 'delivered')) await this.opts.store.update(meta);
      }
    }
    await this.conclude(t, snapshot);
  }

  private async sendBatch(meta: QueueEntryMeta, account: Account, batch: RecipientState[], started: number): Promise<void> {
    const failover = this.failoverOf(account.server);
    const primary = failover.primary();
    const alternate = failover.alternate();
    const first: Route = failover.shouldTryPrimary(Date.now()) || !alternate ? primary : alternate;
    const envelope = { from: meta.envelope.originalFrom === '' ? '' : account.address, to: batch.map((r) => r.address), eightBit: meta.envelope.eightBit };
    for (const r of batch) r.attempts++;

    let route = first;
    let outcome: DeliveryOutcome | RelayError = await this.send(meta, account, envelope, route);
    if (isRelayError(outcome) && !route.alternate && alternate && isUnreachable(outcome)) {
      failover.primaryFailed(Date.now());
      this.opts.logger.warn({ server: account.server.name, primary: `${primary.host}:${primary.port}`, alternate: `${alternate.host}:${alternate.port}`, ...outcome.toLog() }, 'primary unreachable: using the alternate');
      route = alternate;
      outcome = await this.send(meta, account, envelope, route);
    } else if (!isRelayError(outcome) && !route.alternate && failover.primaryWorked()) {
      this.opts.logger.info({ server: account.server.name, primary: `${primary.host}:${primary.port}` }, 'primary reachable again: back from the alternate');
    }

    if (isRelayError(outcome)) {
      for (const r of batch) this.recordFailure(r, outcome, route.host, outcome.temporary);
      meta.lastError = stored(outcome, route.host);
      this.opts.metrics?.failed.inc({ reason: outcome.kind, server: account.server.name, outcome: outcome.temporary ? 'deferred' : 'failed' });
      this.logAttempt(meta, account, route, outcome.temporary ? 'deferred' : 'failed', started, { recipients: batch.length, ...outcome.toLog() });
      return;
    }
    const refused = new Map(outcome.refused.map((x) => [x.recipient.toLowerCase(), x.error]));
    for (const r of batch) {
      const error = refused.get(r.address.toLowerCase());
      if (error) {
        this.recordFailure(r, error, route.host, error.temporary);
      } else {
        r.status = 'delivered';
        r.deliveredAt = new Date().toISOString();
        r.upstreamReply = outcome.upstreamReply;
        r.lastError = undefined;
      }
    }
    const firstRefusal = outcome.refused[0]?.error;
    if (firstRefusal) meta.lastError = stored(firstRefusal, route.host);
    this.opts.metrics?.relayed.inc({ server: account.server.name });
    this.opts.metrics?.deliveryLatency.observe({ server: account.server.name }, (Date.now() - Date.parse(meta.receivedAt)) / 1000);
    for (const x of outcome.refused) {
      this.opts.metrics?.failed.inc({ reason: x.error.kind, server: account.server.name, outcome: x.error.temporary ? 'deferred' : 'failed' });
    }
    this.logAttempt(meta, account, route, outcome.refused.length ? 'partial' : 'delivered', started, {
      recipients: batch.length,
      accepted: batch.length - outcome.refused.length,
      upstreamReply: outcome.upstreamReply,
      ...(outcome.refused.length ? { refused: outcome.refused.map((x) => ({ recipient: x.recipient, ...x.error.toLog() })) } : {}),
    });
  }

  private async send(meta: QueueEntryMeta, account: Account, envelope: { from: string; to: string[]; eightBit: boolean }, route: Route): Promise<DeliveryOutcome | RelayError> {
    const thread = this.opts.upstreamThread;
    const bytes = thread?.handles(account) ? this.opts.store.takeMessage(meta.id) : undefined;
    if (thread && bytes) {
      try {
        return await deliverInThread(thread, account, envelope, bytes, route.alternate ? route : undefined);
      } catch (err) {
        if (isRelayError(err)) return err;
        throw err;
      }
    }
    let message: Readable | undefined;
    try {
      message = this.opts.store.messageStream(meta);
      return await deliverNow(this.opts.pools, account, envelope, message, route.alternate ? route : undefined);
    } catch (err) {
      if (isRelayError(err)) return err;
      throw err;
    } finally {
      // a transaction that failed before DATA never read the file: release it
      message?.destroy();
    }
  }

  private recordFailure(r: RecipientState, err: RelayError, host: string | undefined, temporary: boolean): void {
    r.lastError = stored(err, host);
    if (!temporary) r.status = 'failed';
  }

  /** Applies the verdict: done, retry later, or expired. */
  private async conclude(t: Tracked, snapshot: ConfigSnapshot): Promise<void> {
    const { meta } = t;
    const now = new Date();
    if (t.deleteAfterAttempt) return;
    const verdict = verdictAfterAttempt(meta, now, snapshot.queue);
    if (verdict.kind === 'retry') {
      meta.nextAttemptAt = verdict.at.toISOString();
      t.dueAt = verdict.at.getTime();
      await this.opts.store.update(meta);
      return;
    }
    let gaveUpAfter: string | undefined;
    if (verdict.kind === 'expired') {
      gaveUpAfter = `${formatAge(now.getTime() - Date.parse(meta.receivedAt))} and ${meta.attempts} attempt${meta.attempts === 1 ? '' : 's'}`;
      for (const r of pendingRecipients(meta)) {
        r.status = 'failed';
        const last = r.lastError ?? meta.lastError;
        r.lastError = {
          ...(last ?? { kind: 'internal', code: 451, enhanced: '4.4.7', at: now.toISOString() }),
          reason: `gave up after ${gaveUpAfter}: ${last?.reason ?? 'no attempt succeeded'}`,
        };
      }
    }
    this.tracked.delete(meta.id);
    const failed = meta.recipients.filter((r) => r.status === 'failed');
    if (failed.length === 0) {
      // the account's delivery slot is free once the upstream has answered: the deletion goes on beside the next attempt
      void this.opts.store.remove(meta.id).then(
        () => this.opts.logger.debug({ id: meta.id }, 'removed from the queue: every recipient has the message'),
        (err: unknown) => this.opts.logger.error({ id: meta.id, err: { message: (err as Error).message } }, 'could not remove a delivered message from the queue; it is sent again after a restart'),
      );
      return;
    }
    meta.failedAt = now.toISOString();
    await this.opts.store.moveToFailed(meta);
    this.opts.logger.warn(
      { id: meta.id, result: 'failed', identity: identityLabel(meta), failed: failed.map((r) => ({ recipient: r.address, reason: r.lastError?.reason })), delivered: meta.recipients.length - failed.length },
      `message failed for ${failed.length} recipient${failed.length === 1 ? '' : 's'}; moved to the failed area`,
    );
    await this.opts.writeNotice(meta, failed, gaveUpAfter);
  }

  private failoverOf(server: ServerConfig): FailoverState {
    const fingerprint = `${server.host}:${server.port}|${server.alternate?.host}:${server.alternate?.port}|${server.alternate?.cooldownMs}`;
    let entry = this.failovers.get(server.name);
    if (!entry || entry.fingerprint !== fingerprint) this.failovers.set(server.name, (entry = { fingerprint, state: new FailoverState(server) }));
    return entry.state;
  }

  private rateOf(account: Account): { acquire(): Promise<void> } {
    const rate = account.server.rate;
    if (!rate) return { acquire: () => Promise.resolve() };
    const fingerprint = `${rate.count}/${rate.windowMs}`;
    let entry = this.rates.get(account.key);
    if (!entry || entry.fingerprint !== fingerprint) this.rates.set(account.key, (entry = { fingerprint, window: new RateWindow(rate) }));
    return entry.window;
  }

  private logAttempt(meta: QueueEntryMeta, account: Account | undefined, route: Route | undefined, result: string, started: number, fields: Record<string, unknown>): void {
    const level = result === 'delivered' ? 'info' : 'warn';
    this.opts.logger[level](
      {
        id: meta.id,
        result,
        attempt: meta.attempts,
        identity: identityLabel(meta),
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

export function identityLabel(meta: QueueEntryMeta): string {
  return meta.identity ? `${meta.identity.kind}:${meta.identity.name}` : '(default account)';
}

function stored(err: RelayError, host?: string): StoredError {
  return {
    kind: err.kind,
    code: err.status.code,
    enhanced: err.status.enhanced,
    reason: err.message,
    ...(err.upstreamReply ? { upstreamReply: err.upstreamReply } : {}),
    at: new Date().toISOString(),
    ...(host ? { host } : {}),
  };
}

