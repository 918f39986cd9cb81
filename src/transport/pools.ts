import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import type { Account } from '../config/account.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import type { TokenProvider } from '../oauth/tokens.js';
import { sendViaGraph, type GraphOutcome, type GraphSendOptions } from './graph.js';
import { createPool, openConnections, retire, retireAndWait, sendRaw, type Pool } from '../mail/nodemailer-adapter.js';
import { poolOptions, type TransportTuning } from './options.js';

/** What identify() computes for an account on a route: the pool key and the settings fingerprint. */
type PoolIdentity = readonly [key: string, fingerprint: string];

/**
 * Pools by key, each built for one fingerprint of its account's settings: the main thread's
 * (TransportPools) and the upstream thread's (upstream-worker.ts), which a reload retires alike.
 */
export class PoolSet {
  private readonly pools = new Map<string, { readonly pool: Pool; readonly fingerprint: string }>();

  /** The pool for `key` built with `fingerprint`; one built with another (rotated password, moved host) is retired first, its sends finishing. */
  get(key: string, fingerprint: string, create: () => Pool): Pool {
    const existing = this.pools.get(key);
    if (existing && existing.fingerprint === fingerprint) return existing.pool;
    existing?.pool.close();
    const pool = create();
    this.pools.set(key, { pool, fingerprint });
    return pool;
  }

  /** Gives these pools no more messages and closes each once what it has is sent (see retire). */
  retire(keys: Iterable<string>): void {
    for (const key of keys) {
      const entry = this.pools.get(key);
      if (!entry) continue;
      this.pools.delete(key);
      retire(entry.pool);
    }
  }

  /** Takes the pool of `key` out of the set (it gets no more messages): the caller closes it. */
  take(key: string): Pool | undefined {
    const entry = this.pools.get(key);
    this.pools.delete(key);
    return entry?.pool;
  }

  has(key: string, fingerprint: string): boolean {
    return this.pools.get(key)?.fingerprint === fingerprint;
  }

  /**
   * After a reload: pools whose account disappeared or whose settings changed are closed (a
   * message being sent finishes first); pools of unchanged accounts are kept. Returns the closed keys.
   */
  retain(wanted: (key: string) => string | undefined): string[] {
    const closed: string[] = [];
    for (const [key, entry] of this.pools) {
      if (wanted(key) === entry.fingerprint) continue;
      entry.pool.close();
      this.pools.delete(key);
      closed.push(key);
    }
    return closed;
  }

  /** Open upstream connections across the pools (for the metric). */
  openConnections(): number {
    let open = 0;
    for (const { pool } of this.pools.values()) open += openConnections(pool);
    return open;
  }

  get size(): number {
    return this.pools.size;
  }

  closeAll(): void {
    for (const { pool } of this.pools.values()) pool.close();
    this.pools.clear();
  }
}

/**
 * One nodemailer connection pool per upstream account, so connections (and their sign-in) are
 * reused across messages of the same account and never shared between accounts.
 */
export class TransportPools {
  private readonly pools = new PoolSet();
  /**
   * identify() of the accounts that send, by (server, origin) and route ('' = the primary host),
   * so a message does not pay for poolOptions, JSON and a digest. Both keys are config objects of
   * one snapshot, which never change; a reload brings new ones, so a changed account is computed
   * afresh and gets a new pool, as before. Weak, so the old snapshot's entries go with it.
   */
  private readonly known = new WeakMap<object, WeakMap<object, Map<string, PoolIdentity>>>();
  /**
   * Per server, how many times its primary has failed over, and the primary pool keys of that
   * generation. Each failover starts a new generation of primary pools, so the primary is only
   * trusted again after a connection opened since it failed: a pooled connection from before
   * could take a message while new connections are still refused.
   */
  private readonly primaries = new Map<string, { generation: number; keys: Set<string> }>();

  constructor(
    private readonly tuning: TransportTuning,
    private readonly tokens?: TokenProvider,
    /** Where Graph spools a large passthrough message (the state_dir's graph-spool). */
    private readonly spoolDir?: () => string,
    /**
     * `cluster:` (connection leases): an account has one pool in use at a time; a message through
     * another (its alternate host, a new primary generation) retires the one before, whose idle
     * connections close at once (see Transport.closeAccount for why).
     */
    private readonly onePoolPerAccount = false,
  ) {}

  /** With onePoolPerAccount: the key of each account's pool in use. */
  private readonly inUse = new Map<string, string>();

  /** The pool for an account, on its server's primary host or on the given route (the alternate). */
  get(account: Account, route?: { host: string; port: number }): Pool {
    const [key, fingerprint] = this.cachedIdentity(account, route);
    if (this.onePoolPerAccount) {
      const before = this.inUse.get(account.key);
      if (before !== key) {
        if (before !== undefined) this.pools.retire([before]);
        this.inUse.set(account.key, key);
      }
    }
    return this.pools.get(key, fingerprint, () => {
      const provision = account.method === 'xoauth2' && this.tokens ? this.tokens.provisioner(account) : undefined;
      return createPool(poolOptions(account, this.tuning, route, provision));
    });
  }

  /** Sends a ready-made message through the account's pool (see sendRaw). */
  send(account: Account, route: { host: string; port: number } | undefined, envelope: UpstreamEnvelope, message: Readable): Promise<SMTPPool.SentMessageInfo> {
    return sendRaw(this.get(account, route), envelope, message);
  }

  /** Microsoft Graph servers (type: graph) send with the app token instead of a pool. */
  graph(account: Account, envelope: UpstreamEnvelope, message: Readable, reopen?: () => Readable): Promise<GraphOutcome> {
    if (!this.tokens) throw new Error('Graph needs a token provider');
    const opts: GraphSendOptions = { ...(reopen ? { reopen } : {}), ...(this.spoolDir ? { spoolDir: this.spoolDir() } : {}) };
    return sendViaGraph(this.tokens, account, envelope, message, opts);
  }

  get size(): number {
    return this.pools.size;
  }

  /** Open upstream connections across all pools (for the metric). */
  openConnections(): number {
    return this.pools.openConnections();
  }

  /** After a reload: closes the pools `wanted` (key → fingerprint) no longer has (PoolSet.retain); returns their keys. */
  retain(wanted: ReadonlyMap<string, string>): string[] {
    return this.pools.retain((key) => wanted.get(key));
  }

  /**
   * The server's primary could not be reached: its accounts' primary pools get no more messages
   * (they close once idle) and the next message for the primary opens a new pool. Returns the
   * retired keys, for the upstream thread's pools.
   */
  primaryFailed(server: string): string[] {
    const primary = this.primaries.get(server) ?? { generation: 0, keys: new Set<string>() };
    const retired = [...primary.keys];
    this.primaries.set(server, { generation: primary.generation + 1, keys: new Set() });
    this.pools.retire(retired);
    return retired;
  }

  /** With onePoolPerAccount: closes the account's pool; resolves when its connections are closed (retireAndWait). */
  async closeAccount(accountKey: string): Promise<string[]> {
    const key = this.inUse.get(accountKey);
    if (key === undefined) return [];
    this.inUse.delete(accountKey);
    const pool = this.pools.take(key);
    if (pool) await retireAndWait(pool);
    return [key];
  }

  /** The pool key and settings fingerprint an account (on a route) would have. */
  identify(account: Account, route?: { host: string; port: number }): [string, string] {
    const key = route ? `${account.key}@${route.host}:${route.port}` : this.primaryKey(account);
    // OAuth settings live outside the nodemailer options (in the token provisioner): fingerprint them too
    const o = account.oauth;
    const oauth = o
      ? createHash('sha256')
          .update(JSON.stringify([o.tokenUrl, o.clientId, o.scope, o.grant, o.clientSecret?.reveal(), o.refreshToken?.reveal()]))
          .digest('hex')
      : '';
    return [key, `${JSON.stringify(poolOptions(account, this.tuning, route))}|${oauth}`];
  }

  /** The account's pool key on its server's primary, in the current generation (see `primaries`). */
  private primaryKey(account: Account): string {
    let primary = this.primaries.get(account.server.name);
    if (!primary) this.primaries.set(account.server.name, (primary = { generation: 0, keys: new Set() }));
    const key = primary.generation === 0 ? account.key : `${account.key}#${primary.generation}`;
    primary.keys.add(key);
    return key;
  }

  /** identify(), computed once per account of a snapshot, route and primary generation (see `known`). */
  cachedIdentity(account: Account, route?: { host: string; port: number }): PoolIdentity {
    const generation = route ? 0 : (this.primaries.get(account.server.name)?.generation ?? 0);
    const routeKey = route ? `${route.host}:${route.port}` : generation === 0 ? '' : `#${generation}`;
    let byOrigin = this.known.get(account.server);
    let byRoute = byOrigin?.get(account.origin);
    const known = byRoute?.get(routeKey);
    if (known) return known;
    const computed = this.identify(account, route);
    if (!byOrigin) this.known.set(account.server, (byOrigin = new WeakMap()));
    if (!byRoute) byOrigin.set(account.origin, (byRoute = new Map()));
    byRoute.set(routeKey, computed);
    return computed;
  }

  closeAll(): void {
    this.pools.closeAll();
  }
}
