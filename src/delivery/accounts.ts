import { mkdir, open, readFile, readdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Account } from '../config/account.js';
import type { DailyConfig } from '../config/types.js';
import { RelayError, deferredForm, type ErrorFields } from '../errors/relay-error.js';
import type { SendOutcome } from '../transport/send.js';
import { systemClock, type Clock } from './clock.js';
import type { Logger } from '../log.js';
import { DirSync } from '../queue/dir-sync.js';
import type { Cluster } from '../cluster/cluster.js';
import type { AccountLeases } from '../cluster/account-leases.js';
import { BUDGETS, BUCKET_MS, SLACK_MS, WINDOW_MS, clockTime, holdAfterQuota, crossed, prune, record, release, roomFor, usage, type Backoff, type Bucket, type BudgetName, type Room, type Want } from './budget.js';
import { SharedBudgets } from '../cluster/budgets.js';
import { SharedBudgetPart } from './shared-budget.js';

/** What one account has done lately, for /status. */
export interface AccountOutcome {
  readonly at: string;
  readonly kind?: ErrorFields['kind'];
  readonly code?: number;
  readonly enhanced?: string;
  readonly reason?: string;
  readonly upstreamReply?: string;
}

/** A reservation made before a transaction: given back if the upstream took nothing. */
export interface Reservation {
  readonly want: Want;
  readonly at: number;
}

/** reserve()'s answer: counted, or which budget is in the way and when room frees; undefined without `daily`. */
export type Reserved = { reservation: Reservation } | { error: RelayError; freeAt: number } | undefined;

/**
 * One upstream account's state beyond a single message: its budget use (buckets, kept in
 * state_dir so a restart does not forget it), its transactions running, backoff and hold, and
 * how its last sends went. Shared by the queue's lane for the account and by passthrough.
 */
export class AccountState {
  buckets: Bucket[] = [];
  /** Upstream transactions running now (queue and passthrough). */
  inUse = 0;
  backoff: Backoff | undefined;
  /** Nothing is sent before this time (a provider's quota refusal). */
  heldUntil = 0;
  heldBecause: RelayError | undefined;
  lastSuccess: AccountOutcome | undefined;
  lastFailure: AccountOutcome | undefined;
  /** The account's `daily` as last seen (for /status and metrics between messages). */
  daily: DailyConfig | undefined;
  server = '';
  address = '';
  connections = 0;
  /** `cluster:`: the account's connection slots leased from Redis, shared with the other replicas (see see()). */
  leases: AccountLeases | undefined;
  private readonly warned = new Set<BudgetName>();
  private slotWaiters: (() => void)[] = [];
  private writing: Promise<void> | undefined;
  private next: Promise<void> | undefined;
  /** With `cluster:`: the budgets counted with the other replicas. */
  private readonly shared: SharedBudgetPart | undefined;

  constructor(
    readonly key: string,
    private readonly book: AccountBook,
  ) {
    if (book.sharedBudgets) this.shared = new SharedBudgetPart(book.sharedBudgets, key, () => this.buckets);
  }

  /** The replicas' shared state, when `cluster:` is configured (the lane's rate window shares through it). */
  get cluster(): Cluster | undefined {
    return this.book.cluster;
  }

  /** The account as configured now: its limits and names. */
  see(account: Account): void {
    this.daily = account.server.daily;
    this.connections = account.server.connections;
    this.server = account.server.name;
    this.address = account.address;
    // only an account that resolved gets leases (the queue's lanes of unresolvable entries never see one)
    if (!this.leases && this.book.cluster) {
      this.leases = this.book.cluster.leases.of(this.key);
      this.leases.onChange(() => this.book.connectionsChanged(this));
    }
  }

  /**
   * Counts `want` against the account's budgets when it fits, else says which budget is in the
   * way (a RelayError of kind quota: 451 4.7.0) and when room frees. The count is in memory
   * only: commit() makes it durable, and must be awaited before the transaction starts.
   * With `cluster:` every replica's use counts (one Redis round trip; a promise), else it is
   * answered at once.
   */
  reserve(account: Account, want: Want, now: number): Reserved | Promise<Reserved> {
    this.see(account);
    const daily = account.server.daily;
    if (!daily) return undefined;
    if (this.shared) return this.reserveShared(account, daily, want, now);
    return this.reserveLocal(account, daily, want, now);
  }

  private reserveLocal(account: Account, daily: DailyConfig, want: Want, now: number, whole?: DailyConfig): Reserved {
    prune(this.buckets, now);
    const error = this.quotaError(account, daily, want, now, whole);
    if (error) return error;
    record(this.buckets, want, now);
    this.checkWarnings(now);
    return { reservation: { want, at: now } };
  }

  private async reserveShared(account: Account, daily: DailyConfig, want: Want, now: number): Promise<Reserved> {
    const outcome = await this.shared!.reserve(daily, want, now);
    // Redis away: this replica's own count against its share of each limit
    if (outcome.kind === 'away') return this.reserveLocal(account, this.shared!.share(daily), want, now, daily);
    if (outcome.kind === 'full') return this.quotaFrom(account, outcome.room, now);
    this.checkWarnings(now);
    return { reservation: { want, at: now } };
  }

  /** `whole`: the limits `daily` is this replica's share of while Redis is away. */
  private quotaError(account: Account, daily: DailyConfig | undefined, want: Want, now: number, whole?: DailyConfig): { error: RelayError; freeAt: number } | undefined {
    const room = roomFor(this.buckets, daily, want, now);
    return room.ok ? undefined : this.quotaFrom(account, room, now, whole);
  }

  private quotaFrom(account: Account, room: Extract<Room, { ok: false }>, now: number, whole?: DailyConfig): { error: RelayError; freeAt: number } {
    const what = room.budget === 'recipients' ? `${room.limit} recipients` : `${room.limit} messages`;
    const share = whole ? ` (this relay's share of ${whole[room.budget]} while the cluster's Redis is away)` : '';
    const error = new RelayError(
      'quota',
      { code: 451, enhanced: '4.7.0' },
      `account ${account.address} (server ${account.server.name}) has used its ${what} per 24 h${share} (${room.used} counted); try again after ${clockTime(room.freeAt, now)}`,
      { fix: `wait: the rolling 24 h window frees room at ${new Date(room.freeAt).toISOString()}; or raise ${account.server.path}.daily.${room.budget} if the provider allows more` },
    );
    return { error, freeAt: room.freeAt };
  }

  /**
   * Whether `want` would fit now, without counting it (before waiting for a rate slot). With
   * `cluster:` no round trip: the last refusal from Redis until its time, the local share while
   * Redis is away, and otherwise reserve() decides.
   */
  room(account: Account, want: Want, now: number): { error: RelayError; freeAt: number } | undefined {
    const daily = account.server.daily;
    if (!daily) return undefined;
    prune(this.buckets, now);
    const shared = this.shared;
    if (shared?.up) return shared.full && shared.full.freeAt > now ? this.quotaFrom(account, shared.full.room, now) : undefined;
    if (shared) return this.quotaError(account, shared.share(daily), want, now, daily);
    return this.quotaError(account, daily, want, now);
  }

  /** The upstream took none of it: the count is given back (in memory; the next commit writes it; with `cluster:` in Redis too). */
  giveBack(r: Reservation): void {
    release(this.buckets, r.want, r.at);
    this.shared?.giveBack(r.want, r.at);
  }

  /** Puts this replica's own count in Redis as its part of the shared one (`cluster:`; at load and when Redis is back). */
  async syncBudgets(now: number): Promise<void> {
    await this.shared?.sync(now);
  }

  /** Use of each configured budget now: with `cluster:` every replica's while Redis answers. */
  use(now: number): { budget: BudgetName; used: number; limit: number }[] {
    const daily = this.daily;
    if (!daily) return [];
    const used = this.shared?.usage(now) ?? usage(this.buckets, now);
    return BUDGETS.filter((b) => daily[b] !== undefined).map((b) => ({ budget: b, used: used[b], limit: daily[b]! }));
  }

  /**
   * Makes every reservation so far durable (state_dir/budgets/ACCOUNT.json), group-committed:
   * reservations made while a write runs share the next one, so N messages at once cost about
   * two writes, not N.
   */
  commit(): Promise<void> {
    if (this.next) return this.next;
    const after = (this.writing ?? Promise.resolve()).then(
      () => undefined,
      () => undefined,
    );
    this.next = after.then(() => {
      this.next = undefined;
      const w = this.book.write(this);
      this.writing = w;
      void w.finally(() => {
        if (this.writing === w) this.writing = undefined;
      }).catch(() => undefined);
      return w;
    });
    return this.next;
  }

  /** Waits for one of the account's `connections` (passthrough: the queue's lane counts its own); with `cluster:` within its leases. */
  async slot(connections: number): Promise<() => void> {
    const leases = this.leases;
    const room = () => (leases ? leases.limit(connections, connections, this.inUse) : connections);
    while (this.inUse >= room()) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    this.inUse++;
    leases?.enter();
    return () => {
      this.inUse--;
      leases?.exit();
      this.slotWaiters.shift()?.();
    };
  }

  /** @internal a lease granted or lost, Redis gone or back: the waiters for a slot look again */
  wakeSlotWaiters(): void {
    for (const w of this.slotWaiters.splice(0)) w();
  }

  succeeded(now: number): void {
    this.lastSuccess = { at: new Date(now).toISOString() };
  }

  failed(err: RelayError, now: number): void {
    this.lastFailure = { at: new Date(now).toISOString(), kind: err.kind, code: err.status.code, enhanced: err.status.enhanced, reason: err.message, ...(err.upstreamReply ? { upstreamReply: err.upstreamReply } : {}) };
  }

  private checkWarnings(now: number): void {
    for (const { budget, used, limit } of this.use(now)) {
      if (!crossed(used, limit)) {
        this.warned.delete(budget);
      } else if (!this.warned.has(budget)) {
        this.warned.add(budget);
        this.book.logger.warn({ account: this.key, budget, used, limit, windowHours: WINDOW_MS / 3_600_000 }, `account ${this.key} has used ${Math.round((used / limit) * 100)}% of its ${limit} ${budget} per 24 h`);
      }
    }
  }

  /** The file's content: the buckets that still count. */
  serialize(): string {
    return JSON.stringify({ account: this.key, bucketMs: 60_000, buckets: this.buckets.map((b) => [b.at, b.messages, b.recipients]) });
  }
}

/**
 * Every account's state, by account key, and where the budgets are kept on disk. One per relay:
 * the queue's lanes and passthrough read the same one.
 */
export class AccountBook {
  private readonly states = new Map<string, AccountState>();
  private dir: string | undefined;
  private dirSync: DirSync | undefined;
  private made = false;
  /** `cluster:`: the daily budgets counted in Redis. */
  readonly sharedBudgets: SharedBudgets | undefined;

  constructor(
    readonly logger: Logger,
    private readonly clock: Clock = systemClock,
    /** `cluster:`: budgets, rate windows and connection leases shared with the other replicas. */
    readonly cluster?: Cluster,
  ) {
    if (cluster) {
      // a bucket counts a minute, the slack and 24 h after its start (budget.ts expiresAt)
      this.sharedBudgets = new SharedBudgets(cluster, BUCKET_MS + SLACK_MS + WINDOW_MS);
      // Redis answers again: each account's own count goes back in as its part at once, not at its next message
      cluster.store.onHealth((up) => {
        // only accounts with budgets: the others never reach Redis
        if (up) for (const s of this.states.values()) if (s.daily || s.buckets.length > 0) void s.syncBudgets(this.clock.now());
      });
    }
  }

  of(key: string): AccountState {
    let state = this.states.get(key);
    if (!state) this.states.set(key, (state = new AccountState(key, this)));
    return state;
  }

  /**
   * passthrough (reception's AccountGate): room in the account's budgets, counted and on disk,
   * then one of its connections. The ticket's done() takes the outcome: what the upstream did not
   * take is given back, and a provider's quota refusal holds the account.
   */
  async admit(account: Account, recipients: number): Promise<RelayError | { done(outcome: SendOutcome | undefined): void }> {
    const state = this.of(account.key);
    const now = this.clock.now();
    if (state.heldUntil > now && state.heldBecause) return state.heldBecause;
    const counted = state.reserve(account, { messages: 1, recipients }, now);
    const reserved = counted instanceof Promise ? await counted : counted;
    if (reserved && 'error' in reserved) return reserved.error;
    if (reserved) await state.commit();
    const free = await state.slot(account.server.connections);
    return {
      done: (outcome) => {
        free();
        const at = this.clock.now();
        if (!outcome) return;
        if (outcome.ok) {
          state.succeeded(at);
          if (reserved && outcome.refused.length > 0) state.giveBack({ want: { messages: 0, recipients: outcome.refused.length }, at: reserved.reservation.at });
          return;
        }
        state.failed(outcome.error, at);
        if (reserved) state.giveBack(reserved.reservation);
        if (outcome.error.account === 'hold') {
          state.heldUntil = holdAfterQuota(state.buckets, account.server.daily, at);
          state.heldBecause = deferredForm(outcome.error);
        }
      },
    };
  }

  private readonly connectionListeners = new Set<() => void>();

  /** Called when an account may run more transactions than before (with `cluster:`: a connection lease granted, Redis gone or back). */
  onConnectionsChange(listener: () => void): void {
    this.connectionListeners.add(listener);
  }

  /** @internal */
  connectionsChanged(state: AccountState): void {
    state.wakeSlotWaiters();
    for (const l of this.connectionListeners) l();
  }

  all(): AccountState[] {
    return [...this.states.values()];
  }

  /** Closes the budgets directory kept open for its fsyncs (after the last delivery). */
  async close(): Promise<void> {
    await this.dirSync?.close();
  }

  /** Reads the budgets kept in `stateDir`/budgets (before the first message). */
  async load(stateDir: string, now: number): Promise<void> {
    this.dir = join(stateDir, 'budgets');
    this.dirSync = new DirSync(this.dir);
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return;
    }
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      try {
        const data = JSON.parse(await readFile(join(this.dir, name), 'utf8')) as { account: string; buckets: [number, number, number][] };
        const state = this.of(data.account);
        state.buckets = data.buckets.map(([at, messages, recipients]) => ({ at, messages, recipients }));
        prune(state.buckets, now);
        if (this.sharedBudgets && state.buckets.length > 0) void state.syncBudgets(now);
      } catch (err) {
        // a budget that can't be read is a budget that can't be trusted: ops should see it
        this.logger.error({ file: join(this.dir, name), err: { message: (err as Error).message } }, 'could not read an account budget; it starts from zero');
      }
    }
  }

  /** Writes one account's buckets: a new file, fdatasync, rename, directory fsync. */
  async write(state: AccountState): Promise<void> {
    if (!this.dir) throw new Error('the account budgets were not loaded');
    const text = state.serialize();
    if (!this.made) {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      this.made = true;
    }
    const file = join(this.dir, `${encodeURIComponent(state.key)}.json`);
    const tmp = `${file}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    await this.dirSync!.sync();
  }
}
