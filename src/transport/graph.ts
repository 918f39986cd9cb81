import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import { oneLine } from '../errors/relay-error.js';
import { graphFailure, graphThrottled, graphTooLarge, graphUnreachable } from '../errors/graph.js';
import type { Account } from '../config/account.js';
import { addressKey } from '../mail/address.js';
import { decodeHeaderBytes, parseMailboxList } from '../mail/mailbox.js';
import type { TokenProvider } from '../oauth/tokens.js';
import { HeaderRewriteStream } from '../mail/header-stream.js';

export interface GraphOutcome {
  readonly accepted: readonly string[];
  readonly upstreamReply: string;
}

/**
 * Sends one message through Microsoft Graph's sendMail for the account's mailbox, with the app
 * token, as MIME (the request body is the base64 of the message, Content-Type text/plain). For
 * tenants that turned SMTP AUTH off.
 *
 * Graph has no envelope: it delivers to the To/Cc/Bcc headers. Envelope recipients the headers
 * don't name (real Bcc) are added as a Bcc header, which Graph delivers to and removes.
 */
export async function sendViaGraph(tokens: TokenProvider, account: Account, envelope: UpstreamEnvelope, message: Readable, opts: { maxThrottleWaitMs?: number } = {}): Promise<GraphOutcome> {
  const mailbox = account.username ?? account.address;
  const url = `${account.server.graphUrl.replace(/\/+$/, '')}/v1.0/users/${encodeURIComponent(mailbox)}/sendMail`;
  const where = `Microsoft Graph (${account.server.name}, ${new URL(url).host}) for mailbox ${mailbox}`;
  const body = await encodedBody(message, envelope.to, where);
  let renewed = false;
  const maxWait = opts.maxThrottleWaitMs ?? 30_000;
  let throttledFor = 0;

  for (;;) {
    const token = await tokens.get(account, renewed);
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token.token}`, 'content-type': 'text/plain' },
        body: body.replay(),
        duplex: 'half',
        signal: AbortSignal.timeout(120_000),
      } as RequestInit);
    } catch (err) {
      throw graphUnreachable(err, where);
    }
    if (response.status === 202 || response.status === 200) {
      await response.arrayBuffer().catch(() => undefined);
      return { accepted: [...envelope.to], upstreamReply: `${response.status} Accepted by Microsoft Graph` };
    }
    const text = await response.text().catch(() => '');
    const detail = graphError(text);
    const reply = `${response.status} ${detail}`;
    if (response.status === 401 && !renewed) {
      // the cached token was refused: one fresh token, one retry (as for a 535 over SMTP)
      renewed = true;
      continue;
    }
    if (response.status === 429 || response.status === 503) {
      const wait = retryAfterMs(response.headers.get('retry-after'));
      // Graph asks us to slow down: wait when it is short, otherwise leave it to the queue's schedule
      if (throttledFor + wait <= maxWait) {
        throttledFor += wait;
        await new Promise((resolve) => setTimeout(resolve, wait));
        continue;
      }
      throw graphThrottled(wait, reply, where);
    }
    throw graphFailure(response.status, reply, where, mailbox);
  }
}

function graphError(text: string): string {
  try {
    const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    if (e) return oneLine(`${e.code ?? 'Error'}: ${e.message ?? ''}`).slice(0, 300);
  } catch {
    // not JSON
  }
  return oneLine(text).slice(0, 300) || 'no details';
}

function retryAfterMs(value: string | null): number {
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = value ? Date.parse(value) : NaN;
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : 5_000;
}

/** Graph's sendMail takes at most 4 MB of MIME (larger messages need an upload session). */
export const GRAPH_MAX_MIME_BYTES = 4 * 1024 * 1024;

/**
 * The base64 request body, kept so a retry (fresh token, throttling) can send it again. Graph
 * refuses anything over 4 MB, so the encoding stops there: memory is bounded by that, not by the
 * message's size.
 */
async function encodedBody(message: Readable, envelopeTo: readonly string[], where: string): Promise<{ replay(): ReadableStream<Uint8Array> }> {
  const chunks: Buffer[] = [];
  let size = 0;
  const withBcc = message.pipe(new HeaderRewriteStream({ maxHeaderBytes: 1024 * 1024, onHeaders: (h) => addEnvelopeBcc(h, envelopeTo) })).pipe(new Base64Encode());
  for await (const chunk of withBcc) {
    size += (chunk as Buffer).length;
    if (size > Math.ceil(GRAPH_MAX_MIME_BYTES / 3) * 4) {
      message.destroy();
      throw graphTooLarge(where);
    }
    chunks.push(chunk as Buffer);
  }
  const encoded = Buffer.concat(chunks);
  return { replay: () => Readable.toWeb(Readable.from([encoded])) as ReadableStream<Uint8Array> };
}

function addEnvelopeBcc(headers: import('@zone-eu/mailsplit').Headers, envelopeTo: readonly string[]): void {
  const lines = headers.getList() as { key: string; line: string }[];
  const named = new Set<string>();
  for (const l of lines) {
    if (l.key === 'to' || l.key === 'cc' || l.key === 'bcc') {
      const value = decodeHeaderBytes(l.line.slice(l.line.indexOf(':') + 1)).replace(/\r?\n[ \t]/g, ' ');
      for (const m of parseMailboxList(value)) named.add(addressKey(m.address));
    }
  }
  const missing = envelopeTo.filter((a) => !named.has(addressKey(a)));
  if (missing.length > 0) headers.add('Bcc', missing.join(', '), lines.length);
}

/** Base64 in chunks that are multiples of 3 bytes, so the output is one continuous encoding. */
class Base64Encode extends Transform {
  private rest: Buffer = Buffer.alloc(0);

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const data = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    const usable = data.length - (data.length % 3);
    this.rest = data.subarray(usable);
    done(null, usable ? Buffer.from(data.subarray(0, usable).toString('base64')) : undefined);
  }

  override _flush(done: TransformCallback): void {
    done(null, this.rest.length ? Buffer.from(this.rest.toString('base64')) : undefined);
  }
}
