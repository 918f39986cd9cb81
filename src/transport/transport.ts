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
import { AccountSide, type Side } from './account-side.js';
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
   * So an account has one pool in use at a time, on one side at a time (AccountSide): the upstream
   * thread's for small messages held in memory, as for one relay, or the main thread's pools
   * (TransportPools.onePoolPerAccount) for the rest; a send for the other side first has the side
   * in use close its pool down to the sockets. Then the account's open connections are those of
   * one pool, which opens one only when all its others are busy, and delivery keeps the busy ones
   * within the leases; closeAccount() closes both sides before the leases go back. Caps split
   * between the threads would strand connections in the thread the next message does not use.
   */
  private readonly leased: boolean;
  /** With `cluster:`: which side holds each account's connections, and the upstream thread's pool key in use per account. */
  private readonly sides = new Map<string, AccountSide>();
  private readonly threadPool = new Map<string, string>();

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
    return this.thread.handles(account);
  }



  /**
   * One upstream transaction; `route` is the alternate host when failover uses it. `reopen` reads
   * the message again from the start (the queue's file): Graph's draft path reads it more than once.
   */
  send(account: Account, envelope: UpstreamEnvelope, message: Buffer | Readable, route?: { host: string; port: number }, reopen?: () => Readable): Promise<SendOutcome> {
    if (this.leased) return this.sendLeased(account, envelope, message, route, reopen);
    if (!Buffer.isBuffer(message)) return deliverNow(this.pools, account, envelope, message, route, reopen);
    if (this.thread.handles(account)) return deliverInThread(this.thread, account, envelope, message, route);
    return deliverNow(this.pools, account, envelope, Readable.from([message], { objectMode: false }), route);
  }

  /** `cluster:`: the same choice of thread, with the account's connections on one side at a time. */
  private async sendLeased(account: Account, envelope: UpstreamEnvelope, message: Buffer | Readable, route?: { host: string; port: number }, reopen?: () => Readable): Promise<SendOutcome> {
    let side = this.sides.get(account.key);
    if (!side) this.sides.set(account.key, (side = new AccountSide()));
    const inThread = side.choose(Buffer.isBuffer(message) && this.thread.handles(account) ? 'thread' : 'main') === 'thread';
    await side.enter(inThread ? 'thread' : 'main', (from) => this.closeSide(account.key, from));
    try {
      if (inThread) {
        // one pool in the thread too: another route (the alternate) retires the one before
        const [key] = this.pools.cachedIdentity(account, route);
        const before = this.threadPool.get(account.key);
        if (before !== undefined && before !== key) this.thread.retire([before]);
        this.threadPool.set(account.key, key);
        return await deliverInThread(this.thread, account, envelope, message as Buffer, route);
      }
      return await deliverNow(this.pools, account, envelope, Buffer.isBuffer(message) ? Readable.from([message], { objectMode: false }) : message, route, reopen);
    } finally {
      side.exit();
    }
  }

  /** Closes an account's pool on one side, resolving once its connections are closed. */
  private async closeSide(accountKey: string, side: Side): Promise<void> {
    if (side === 'main') {
      await this.pools.closeAccount(accountKey);
      return;
    }
    const key = this.threadPool.get(accountKey);
    this.threadPool.delete(accountKey);
    if (key !== undefined) await this.thread.closePools([key]);
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
    await Promise.all([this.closeSide(account, 'main'), this.closeSide(account, 'thread')]);
    this.sides.get(account)?.forget();
  }

  /** Loads the upstream thread: the first message must not pay for it. */
  ready(): Promise<void> {
    return this.thread.ready();
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

  /** After the deliveries' grace period: what is still sending is given up (queue mode keeps it queued). */
  async close(): Promise<void> {
    // a second for the idle connections' QUIT
    await this.thread.close(1_000);
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
