import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Account } from '../config/account.js';
import { accountFor } from '../config/account.js';
import type { ConfigSnapshot } from '../config/types.js';
import { isRelayError } from '../errors/relay-error.js';
import type { Logger } from '../log.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import { TokenProvider } from '../oauth/tokens.js';
import type { SecretKey } from '../config/secret-key.js';
import { DEFAULT_TUNING } from './options.js';
import { TransportPools } from './pools.js';
import { deliverInThread, deliverNow, type SendOutcome } from './send.js';
import { UpstreamThread } from './upstream-thread.js';
import type { Cluster } from '../cluster/cluster.js';
import { SharedTokens } from '../cluster/tokens.js';

export interface TransportOptions {
  /** Our name in EHLO. */
  readonly helo: string;
  readonly logger: Logger;
  /** Where rotated OAuth refresh tokens are kept (the current snapshot's state_dir). */
  readonly stateDir: () => string;
  /** The command that signs an OAuth account in, named when a token can't be had. */
  readonly loginHint: string;
  /** The current snapshot's age key, which rotated refresh tokens are encrypted to. */
  readonly secretKey?: () => SecretKey | undefined;
  /** `cluster:`: OAuth tokens shared with the other replicas (one refresh for all). */
  readonly cluster?: Cluster;
}

/**
 * Everything that talks to upstreams, behind one object: the main thread's pools, the upstream
 * thread and the OAuth token provider. It does and reports: send() resolves with an outcome
 * value, never with a decision.
 */
export class Transport {
  private readonly pools: TransportPools;
  private readonly thread: UpstreamThread;
  /**
   * `cluster:`: each account's connections are leased from Redis (cluster/leases.ts), and this
   * replica must never have more of them open than it holds leases — idle pooled ones included.
   * The simplest way that is correct: every message of the account goes through the main thread's
   * pools (not the upstream thread), one pool in use per account (TransportPools.onePoolPerAccount).
   * Then the account's open connections are the busy ones (at most its transactions running,
   * which delivery keeps within the leases) plus the idle ones of that one pool, which it opened
   * only when all its others were busy; closeAccount() closes them before the leases go back.
   * Caps split between two threads would strand connections in the thread the next message does
   * not use; moving a lease between threads would need a round trip to close each time. The cost:
   * the main thread carries the upstream conversations the upstream thread carries for one relay.
   */
  private readonly leased: boolean;

  constructor(opts: TransportOptions) {
    const tuning = { ...DEFAULT_TUNING, helo: opts.helo };
    const shared = opts.cluster ? new SharedTokens({ cluster: opts.cluster, logger: opts.logger, secretKey: () => opts.secretKey?.() }) : undefined;
    const tokens = new TokenProvider({ stateDir: opts.stateDir, logger: opts.logger, loginHint: opts.loginHint, secretKey: opts.secretKey, shared });
    this.leased = Boolean(opts.cluster);
    this.pools = new TransportPools(tuning, tokens, () => join(opts.stateDir(), 'graph-spool'), this.leased);
    this.thread = new UpstreamThread(this.pools, tuning);
    opts.cluster?.leases.closeConnectionsWith((account) => this.closeAccount(account));
  }

  /**
   * Whether a message for this account is best handed over whole (up to 64 KiB): the upstream
   * thread sends it, sparing the main thread, which runs every client session. XOAUTH2 (tokens
   * live on the main thread) and Graph are streamed through the main thread's pools.
   */
  takesWhole(account: Account): boolean {
    return !this.leased && this.thread.handles(account);
  }

  /**
   * Whether a message the queue still holds in memory (up to 64 KiB) is best sent from there: the
   * upstream thread's accounts, also with `cluster:`, where the main thread sends it — reading it
   * back from the journal file would cost more than the transaction.
   */
  sendsFromMemory(account: Account): boolean {
    return this.thread.handles(account);
  }

  /**
   * One upstream transaction; `route` is the alternate host when failover uses it. `reopen` reads
   * the message again from the start (the queue's file): Graph's draft path reads it more than once.
   */
  send(account: Account, envelope: UpstreamEnvelope, message: Buffer | Readable, route?: { host: string; port: number }, reopen?: () => Readable): Promise<SendOutcome> {
    if (!Buffer.isBuffer(message)) return deliverNow(this.pools, account, envelope, message, route, reopen);
    if (!this.leased && this.thread.handles(account)) return deliverInThread(this.thread, account, envelope, message, route);
    return deliverNow(this.pools, account, envelope, Readable.from([message], { objectMode: false }), route);
  }

  /**
   * A server's primary could not be reached (delivery failed over): the next message for it
   * opens a new connection, in either thread; the pools from before close once idle.
   */
  primaryFailed(server: string): void {
    this.thread.retire(this.pools.primaryFailed(server));
  }

  /**
   * Closes the account's upstream connections (both threads; with `cluster:` only the main
   * thread's carry any) and resolves once they are closed: before its connection leases go back.
   */
  async closeAccount(account: string): Promise<void> {
    const keys = await this.pools.closeAccount(account);
    this.thread.retire(keys);
  }

  /** Loads the upstream thread: the first message must not pay for it. */
  ready(): Promise<void> {
    // with `cluster:` nothing goes to the thread (see leased): it is never started
    return this.leased ? Promise.resolve() : this.thread.ready();
  }

  /** Open upstream connections, main thread and upstream thread together (for the metric). */
  openConnections(): number {
    return this.pools.openConnections() + this.thread.openConnections();
  }

  /** After a reload: closes the pools the new config can no longer use, in both threads; returns their keys. */
  retainFor(snapshot: ConfigSnapshot): string[] {
    const wanted = this.wantedPools(snapshot);
    this.thread.retain(wanted);
    return this.pools.retain(wanted);
  }

  async close(): Promise<void> {
    await this.thread.close();
    this.pools.closeAll();
  }

  /** Every pool the config can use, with its settings fingerprint: the server account's and each identity's, on each route. */
  private wantedPools(snapshot: ConfigSnapshot): Map<string, string> {
    const wanted = new Map<string, string>();
    const add = (identity: Parameters<typeof accountFor>[1]) => {
      const account = accountFor(snapshot, identity);
      if (isRelayError(account)) return;
      const [key, fingerprint] = this.pools.identify(account);
      wanted.set(key, fingerprint);
      const alt = account.server.alternate;
      if (alt) {
        const [altKey, altFingerprint] = this.pools.identify(account, { host: alt.host, port: alt.port });
        wanted.set(altKey, altFingerprint);
      }
    };
    add(undefined);
    for (const identity of snapshot.identities) add(identity);
    return wanted;
  }
}
