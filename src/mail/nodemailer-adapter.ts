/**
 * Everything sendas does with nodemailer beyond its public API, in one place: sending a
 * ready-made message straight to a pool transport (a MimeNode built by hand, the proxy socket
 * handover sendMail would do), the count of a pool's open connections, MIME parts of a failure
 * notice whose transfer encoding is ours, and nodemailer's address parser. When nodemailer is
 * upgraded, this file, test/unit/pools.test.ts, test/unit/dsn.test.ts and the mailbox tests
 * are what to check. It sits with the mail foundations so that transport, notices and header
 * parsing can all use it.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import nodemailer, { type Transporter } from 'nodemailer';
import addressparser from 'nodemailer/lib/addressparser';
import MimeNode from 'nodemailer/lib/mime-node';
import type MailMessage from 'nodemailer/lib/mailer/mail-message';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import { SocksClient } from 'socks';
import type { UpstreamEnvelope } from './envelope.js';

export type Pool = Transporter<SMTPPool.SentMessageInfo>;

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

/** A nodemailer pool for the given options, ready for sendRaw(). */
export function createPool(options: SMTPPool.Options): Pool {
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
export function sendRaw(transporter: Pool, envelope: UpstreamEnvelope, message: Readable): Promise<SMTPPool.SentMessageInfo> {
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
    transporter.transporter.send(mail as unknown as MailMessage<SMTPPool.SentMessageInfo>, (err, info) => {
      // this message no longer counts as pending by now
      if (retired.has(transporter) && pending(transporter) === 0) transporter.close();
      if (err) fail(err);
      else resolve(info as SMTPPool.SentMessageInfo);
    });
  });
}

/** Pools given no more messages: each closes when its last message is done (see retire). */
const retired = new WeakSet<Pool>();

/**
 * Closes a pool once it has nothing left to send. close() at once would fail the messages still
 * waiting in its queue for a connection ("Connection pool was closed") instead of letting them
 * go on, and close only its idle connections; nodemailer's pendingCount() (queued and in flight)
 * says when nothing is left. The caller sends the pool nothing more.
 */
export function retire(transporter: Pool): void {
  if (pending(transporter) === 0) transporter.close();
  else retired.add(transporter);
}

/** A pool's connection (nodemailer's PoolResource) as far as retireAndWait reads it. */
interface PoolResourceLike {
  _closed?: boolean;
  connection?: { _socket?: { destroyed: boolean; closed?: boolean; once(event: 'close', fn: () => void): unknown } };
  once(event: 'close' | 'error', fn: () => void): unknown;
}

/**
 * retire(), resolved once every connection the pool had (and any it opens for what it still had
 * queued) is closed down to its socket: the upstream has seen the session end. The connections
 * are taken before retiring, because retire closes the idle ones at once.
 */
export async function retireAndWait(transporter: Pool): Promise<void> {
  const pool = transporter.transporter as unknown as { _connections?: PoolResourceLike[] };
  const first = (pool._connections ?? []).map(closed);
  retire(transporter);
  await Promise.all(first);
  while ((pool._connections?.length ?? 0) > 0) await Promise.all(pool._connections!.map(closed));
}

function closed(resource: PoolResourceLike): Promise<void> {
  return new Promise((resolve) => {
    let left = 2;
    const done = () => {
      if (--left === 0) resolve();
    };
    const socket = resource.connection?._socket;
    if (!socket || (socket.destroyed && socket.closed !== false)) done();
    else socket.once('close', done);
    if (resource._closed) done();
    else {
      let once = false;
      const end = () => {
        if (!once) (once = true), done();
      };
      resource.once('close', end);
      resource.once('error', end);
    }
  });
}

function pending(transporter: Pool): number {
  return (transporter.transporter as unknown as { pendingCount(): number }).pendingCount();
}

/** A pool's open upstream connections (nodemailer keeps no public count: the pool's own list). */
export function openConnections(transporter: Pool): number {
  return (transporter.transporter as unknown as { _connections?: unknown[] })._connections?.length ?? 0;
}

export { MimeNode, addressparser };

/**
 * A leaf whose body goes out under exactly the transfer encoding given. MimeNode on its
 * own decides the encoding of a text/* Buffer itself (always quoted-printable or base64),
 * whatever Content-Transfer-Encoding the node was given; the delivery-status fields and the
 * original header lines of a notice must reach the reader as they are.
 */
export class FixedEncodingNode extends MimeNode {
  readonly #encoding: string;

  constructor(contentType: string, encoding: '7bit' | '8bit' | 'quoted-printable') {
    super(contentType);
    this.#encoding = encoding;
  }

  override getTransferEncoding(): string {
    return this.#encoding;
  }
}
