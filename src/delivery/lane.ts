import type { Account } from '../config/account.js';
import { DEFAULTS } from '../config/defaults.js';
import type { ServerConfig } from '../config/types.js';
import type { AccountState } from './accounts.js';
import { concurrency } from './budget.js';
import { FailoverState, failoverFingerprint } from './failover.js';
import { RateWindow } from './rate-limit.js';
import { SharedRate } from './shared-rate.js';

/**
 * One upstream account's share of delivery: the entries due for it in order, how many of its
 * transactions run (at most its `connections`, fewer while it backs off), its rate window, its
 * budgets and hold (`account`, shared with passthrough) and its server's failover state. The
 * runner serves lanes round-robin, so one slow account never holds up another.
 */
export class Lane {
  /** Ids due, oldest first; `head` is the next one (a moving index instead of shift()). */
  private due: string[] = [];
  private head = 0;
  running = 0;
  private rateWindow: RateWindow | SharedRate | undefined;
  private failoverState: { server: ServerConfig; fingerprint: string; state: FailoverState } | undefined;

  /** The account's `connections` as last seen in the config. */
  private connections: number = DEFAULTS.server.connections;

  constructor(
    readonly key: string,
    private readonly failovers: FailoverRegistry,
    readonly account: AccountState,
  ) {}

  /** The account as configured now: its limits. */
  see(account: Account): void {
    this.connections = account.server.connections;
    this.account.see(account);
  }

  /** Transactions the lane may run at once now; with `cluster:` no more than the connection leases held (cluster/leases.ts). */
  limit(now: number): number {
    const wanted = concurrency(this.connections, this.account.backoff, now);
    const leases = this.account.leases;
    return leases ? leases.limit(this.connections, wanted, this.running) : wanted;
  }

  /** An attempt starts: it counts against limit(), and keeps the account's leases from going back while it runs. */
  begin(): void {
    this.running++;
    this.account.leases?.enter();
  }

  end(): void {
    this.running--;
    this.account.leases?.exit();
  }

  get waiting(): number {
    return this.due.length - this.head;
  }

  push(id: string): void {
    this.due.push(id);
  }

  /** The next due id, or undefined. */
  take(): string | undefined {
    if (this.head >= this.due.length) return undefined;
    const id = this.due[this.head++]!;
    if (this.head === this.due.length) {
      this.due = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.due.length) {
      this.due = this.due.slice(this.head);
      this.head = 0;
    }
    return id;
  }

  /** Drops a waiting id (sendas queue delete). */
  remove(id: string): void {
    const i = this.due.indexOf(id, this.head);
    if (i >= 0) this.due.splice(i, 1);
  }

  /**
   * The rate window for the account as configured now (none without `rate`); a changed rate starts
   * a new one. With `cluster:` the window is shared with the other replicas through Redis.
   */
  rate(account: Account): RateWindow | SharedRate | undefined {
    const rate = account.server.rate;
    if (!rate) return (this.rateWindow = undefined);
    const w = this.rateWindow;
    if (!w || w.rate.count !== rate.count || w.rate.windowMs !== rate.windowMs) {
      const cluster = this.account.cluster;
      this.rateWindow = cluster ? new SharedRate(rate, this.key, cluster) : new RateWindow(rate);
    }
    return this.rateWindow;
  }

  /** The failover state of the account's server as configured now. */
  failover(server: ServerConfig): FailoverState {
    // a snapshot's config objects never change: only a reload's new ones need a look
    const known = this.failoverState;
    if (known?.server === server) return known.state;
    const fingerprint = failoverFingerprint(server);
    const state = known?.fingerprint === fingerprint ? known.state : this.failovers.of(server, fingerprint);
    this.failoverState = { server, fingerprint, state };
    return state;
  }
}

/**
 * Failover states by server. Reachability is the host's, not the account's: every lane on a
 * server shares one, so when the primary goes down each account does not pay for finding out
 * (a connect timeout each) on its own.
 */
export class FailoverRegistry {
  private readonly states = new Map<string, { fingerprint: string; state: FailoverState }>();

  of(server: ServerConfig, fingerprint = failoverFingerprint(server)): FailoverState {
    let entry = this.states.get(server.name);
    if (!entry || entry.fingerprint !== fingerprint) this.states.set(server.name, (entry = { fingerprint, state: new FailoverState(server) }));
    return entry.state;
  }

  /** The state of a server as configured now, if any send has asked for it (a reload that moved its hosts starts it afresh). */
  peek(server: ServerConfig): FailoverState | undefined {
    const entry = this.states.get(server.name);
    return entry?.fingerprint === failoverFingerprint(server) ? entry.state : undefined;
  }
}
