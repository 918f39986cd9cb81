import { createHash } from 'node:crypto';
import nodemailer, { type Transporter } from 'nodemailer';
import { SocksClient } from 'socks';
import type { TokenProvider } from '../oauth/tokens.js';
import type { Readable } from 'node:stream';
import type { UpstreamEnvelope } from '../delivery/envelope.js';
import { sendViaGraph, type GraphOutcome } from './graph.js';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import type { Account } from '../identity/account.js';
import { poolOptions, type TransportTuning } from './options.js';

interface PoolEntry {
  readonly transporter: Transporter<SMTPPool.SentMessageInfo>;
  /** Options the pool was built with; a different fingerprint means the account changed. */
  readonly fingerprint: string;
}

/**
 * One nodemailer connection pool per upstream account, so connections (and their sign-in) are
 * reused across messages of the same account and never shared between accounts.
 */
export class TransportPools {
  private readonly pools = new Map<string, PoolEntry>();

  constructor(
    private readonly tuning: TransportTuning,
    private readonly tokens?: TokenProvider,
  ) {}

  /** The pool for an account, on its server's primary host or on the given route (the alternate). */
  get(account: Account, route?: { host: string; port: number }): Transporter<SMTPPool.SentMessageInfo> {
    const [key, fingerprint] = this.identify(account, route);
    const existing = this.pools.get(key);
    if (existing && existing.fingerprint === fingerprint) return existing.transporter;
    // settings changed (rotated password, moved host): retire the old pool, its sends finish first
    if (existing) existing.transporter.close();
    const provision = account.method === 'xoauth2' && this.tokens ? this.tokens.provisioner(account) : undefined;
    const transporter = nodemailer.createTransport(poolOptions(account, this.tuning, route, provision));
    if (account.server.proxy && /^socks/i.test(account.server.proxy)) transporter.set('proxy_socks_module', { SocksClient });
    this.pools.set(key, { transporter, fingerprint });
    return transporter;
  }

  /** Microsoft Graph servers (type: graph) send with the app token instead of a pool. */
  graph(account: Account, envelope: UpstreamEnvelope, message: Readable): Promise<GraphOutcome> {
    if (!this.tokens) throw new Error('Graph needs a token provider');
    return sendViaGraph(this.tokens, account, envelope, message);
  }

  get size(): number {
    return this.pools.size;
  }

  /** Open upstream connections across all pools (for the metric; nodemailer keeps no public count). */
  openConnections(): number {
    let open = 0;
    for (const { transporter } of this.pools.values()) {
      const pool = (transporter as unknown as { transporter?: { _connections?: unknown[] } }).transporter;
      open += pool?._connections?.length ?? 0;
    }
    return open;
  }

  /**
   * After a reload: pools whose account disappeared or whose settings changed are closed
   * (a message being sent finishes first); pools of unchanged accounts are kept.
   */
  retain(wanted: ReadonlyMap<string, string>): string[] {
    const closed: string[] = [];
    for (const [key, entry] of this.pools) {
      if (wanted.get(key) !== entry.fingerprint) {
        entry.transporter.close();
        this.pools.delete(key);
        closed.push(key);
      }
    }
    return closed;
  }

  /** The pool key and settings fingerprint an account (on a route) would have. */
  identify(account: Account, route?: { host: string; port: number }): [string, string] {
    const key = route ? `${account.key}@${route.host}:${route.port}` : account.key;
    // OAuth settings live outside the nodemailer options (in the token provisioner): fingerprint them too
    const o = account.oauth;
    const oauth = o
      ? createHash('sha256')
          .update(JSON.stringify([o.tokenUrl, o.clientId, o.scope, o.grant, o.clientSecret?.reveal(), o.refreshToken?.reveal()]))
          .digest('hex')
      : '';
    return [key, `${JSON.stringify(poolOptions(account, this.tuning, route))}|${oauth}`];
  }

  closeAll(): void {
    for (const { transporter } of this.pools.values()) transporter.close();
    this.pools.clear();
  }
}
