import { createHash, randomBytes } from 'node:crypto';
import nodemailer, { type Transporter } from 'nodemailer';
import MimeNode from 'nodemailer/lib/mime-node';
import type MailMessage from 'nodemailer/lib/mailer/mail-message';
import { SocksClient } from 'socks';
import type { TokenProvider } from '../oauth/tokens.js';
import type { Readable } from 'node:stream';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import { sendViaGraph, type GraphOutcome } from './graph.js';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import type { Account } from '../config/account.js';
import { poolOptions, type TransportTuning } from './options.js';

interface PoolEntry {
  readonly transporter: Transporter<SMTPPool.SentMessageInfo>;
  /** Options the pool was built with; a different fingerprint means the account changed. */
  readonly fingerprint: string;
}

/** What identify() computes for an account on a route: the pool key and the settings fingerprint. */
type PoolIdentity = readonly [key: string, fingerprint: string];

/** Recipients nodemailer's Mail.sendMail allows on one message by default (its maxRecipients backstop). */
const MAX_RECIPIENTS = 100_000;
/** MimeNode draws a random multipart boundary unless given one; a raw message has no parts to separate. */
const BASE_BOUNDARY = 'sendas-raw';
/** Message-IDs of the MIME nodes handed to the pool: unique per process, no randomness per message. */
const ID_PREFIX = `sendas.${randomBytes(6).toString('hex')}.`;
let idCounter = 0;

/**
 * A MimeNode whose stream is the raw message itself. MimeNode.createReadStream would wrap it in a
 * PassThrough and a LastNewline transform joined by stream.pipeline (an AbortController and a
 * DOMException per message: ~3% of the main thread in the benchmark) to change nothing: a raw
 * node has no encoding to apply, and the SMTP data stream ends the last line itself before the
 * final dot. Errors and destroy() act on the message stream directly, as the pool expects.
 */
class RawMimeNode extends MimeNode {
  constructor(private readonly raw: Readable) {
    super('message/rfc822', { baseBoundary: BASE_BOUNDARY });
    this.setRaw(raw);
  }

  override createReadStream(): Readable {
    return this.raw;
  }
}

/**
 * The message object nodemailer's SMTP pool sends: what Mail.sendMail builds for `{ envelope, raw }`,
 * without its plugin pipeline, MailComposer and the crypto.randomBytes calls for a MIME boundary
 * and a Message-ID. A MimeNode holding the ready-made message, which it streams as is, with the SMTP
 * envelope set on it. The pool reads `message` (envelope, Message-ID, the stream) and `data` (dsn,
 * requireTLSExtensionEnabled, signal: none of them set here, as before). The Message-ID only shows
 * in nodemailer's logs and info.messageId: a raw node never writes its headers.
 */
function rawMail(envelope: UpstreamEnvelope, raw: Readable): { data: { envelope: object }; message: MimeNode } {
  const at = envelope.from.lastIndexOf('@');
  const node = new RawMimeNode(raw);
  node.setHeader('Message-ID', `<${ID_PREFIX}${++idCounter}@${(at >= 0 && envelope.from.slice(at + 1)) || 'localhost'}>`);
  // as Mail.sendMail passes it (MailComposer → setEnvelope): addresses normalized, use8BitMime carried along
  const mailEnvelope = { from: envelope.from, to: [...envelope.to], use8BitMime: envelope.eightBit };
  node.setEnvelope(mailEnvelope);
  return { data: { envelope: mailEnvelope }, message: node };
}

/**
 * One nodemailer connection pool per upstream account, so connections (and their sign-in) are
 * reused across messages of the same account and never shared between accounts.
 */
export class TransportPools {
  private readonly pools = new Map<string, PoolEntry>();
  /**
   * identify() of the accounts that send, by (server, origin) and route ('' = the primary host),
   * so a message does not pay for poolOptions, JSON and a digest. Both keys are config objects of
   * one snapshot, which never change; a reload brings new ones, so a changed account is computed
   * afresh and gets a new pool, as before. Weak, so the old snapshot's entries go with it.
   */
  private readonly known = new WeakMap<object, WeakMap<object, Map<string, PoolIdentity>>>();

  constructor(
    private readonly tuning: TransportTuning,
    private readonly tokens?: TokenProvider,
  ) {}

  /** The pool for an account, on its server's primary host or on the given route (the alternate). */
  get(account: Account, route?: { host: string; port: number }): Transporter<SMTPPool.SentMessageInfo> {
    const [key, fingerprint] = this.cachedIdentity(account, route);
    const existing = this.pools.get(key);
    if (existing && existing.fingerprint === fingerprint) return existing.transporter;
    // settings changed (rotated password, moved host): retire the old pool, its sends finish first
    if (existing) existing.transporter.close();
    const provision = account.method === 'xoauth2' && this.tokens ? this.tokens.provisioner(account) : undefined;
    const transporter = createPool(poolOptions(account, this.tuning, route, provision));
    this.pools.set(key, { transporter, fingerprint });
    return transporter;
  }

  /** Sends a ready-made message through the account's pool (see sendRaw). */
  send(account: Account, route: { host: string; port: number } | undefined, envelope: UpstreamEnvelope, message: Readable): Promise<SMTPPool.SentMessageInfo> {
    return sendRaw(this.get(account, route), envelope, message);
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

  /** identify(), computed once per account of a snapshot and route (see `known`). */
  cachedIdentity(account: Account, route?: { host: string; port: number }): PoolIdentity {
    const routeKey = route ? `${route.host}:${route.port}` : '';
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
    for (const { transporter } of this.pools.values()) transporter.close();
    this.pools.clear();
  }
}

/** A nodemailer pool for the given options, ready for sendRaw(). */
export function createPool(options: SMTPPool.Options): Transporter<SMTPPool.SentMessageInfo> {
  const transporter = nodemailer.createTransport(options);
  if (typeof options.proxy === 'string' && /^socks/i.test(options.proxy)) transporter.set('proxy_socks_module', { SocksClient });
  // Mail.sendMail hands the proxy socket handler (set up from `proxy`) to the transport on its
  // first send; sendRaw() skips sendMail, so hand it over now, as sendMail would
  if (typeof transporter.getSocket === 'function') {
    transporter.transporter.getSocket = transporter.getSocket;
    transporter.getSocket = false;
  }
  return transporter;
}

/**
 * Sends a ready-made message with the given envelope through a pool. Straight to the pool
 * transport, which is where Mail.sendMail ends: for a `raw` message sendMail's plugin pipeline,
 * MailComposer and Message-ID generation only cost CPU (no plugins or DKIM are set on these
 * transporters). Resolves with what sendMail would resolve with; on failure the message stream
 * is destroyed, as sendMail does.
 */
export function sendRaw(transporter: Transporter<SMTPPool.SentMessageInfo>, envelope: UpstreamEnvelope, message: Readable): Promise<SMTPPool.SentMessageInfo> {
  return new Promise((resolve, reject) => {
    const fail = (err: unknown) => {
      if (!message.destroyed) message.destroy();
      reject(err);
    };
    let mail: ReturnType<typeof rawMail>;
    try {
      mail = rawMail(envelope, message);
    } catch (err) {
      fail(err);
      return;
    }
    const recipients = mail.message.getEnvelope().to.length;
    if (recipients > MAX_RECIPIENTS) {
      fail(Object.assign(new Error(`Message has ${recipients} recipients, which is over the ${MAX_RECIPIENTS} allowed by maxRecipients`), { code: 'EMAXRECIPIENTS' }));
      return;
    }
    transporter.transporter.send(mail as unknown as MailMessage<SMTPPool.SentMessageInfo>, (err, info) => (err ? fail(err) : resolve(info as SMTPPool.SentMessageInfo)));
  });
}
