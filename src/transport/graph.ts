import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Headers } from '@zone-eu/mailsplit';
import { graphTooLarge } from '../errors/graph.js';
import type { Account } from '../config/account.js';
import { addressKey } from '../mail/address.js';
import { decodeHeaderBytes, parseMailboxList } from '../mail/mailbox.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import type { TokenProvider } from '../oauth/tokens.js';
import { HeaderRewriteStream } from '../mail/header-stream.js';
import { attachmentParts, draftMime, partsToDetach, survey, type MimePart } from './graph-mime.js';
import { GraphRequests } from './graph-requests.js';
import { ChunkedUpload, contentRange } from './graph-upload.js';

export interface GraphOutcome {
  readonly accepted: readonly string[];
  readonly upstreamReply: string;
}

export interface GraphSendOptions {
  /** How long one message may wait for Graph's Retry-After in all (default 30 s); longer goes back to the queue. */
  readonly maxThrottleWaitMs?: number;
  /** Reads the message again from the start (the queue's file): the draft path reads it three times. */
  readonly reopen?: () => Readable;
  /** Without `reopen` (passthrough), a message too large for sendMail is spooled to a file here first. */
  readonly spoolDir?: string;
}

/**
 * sendMail takes the message as base64 MIME, and Graph refuses a request over 4 MB: base64 makes
 * 3 bytes 4, so 3 MB of MIME is the most one request carries (whether Graph's MB is 10^6 or 2^20).
 */
export const GRAPH_MIME_LIMIT = 3_000_000;
/** Microsoft: an attachment under 3 MB is one POST; from 3 MB to 150 MB it needs an upload session. */
export const GRAPH_POST_ATTACHMENT_LIMIT = 3_000_000;
export const GRAPH_MAX_ATTACHMENT = 150_000_000;
/**
 * PidTagDeleteAfterSubmit (MS-OXOMSG 2.2.3.8, 3.3.5.1.3): "If this property is set to 0x01, the
 * message is deleted after the message is sent". Graph's draft send has no saveToSentItems
 * parameter (only sendMail's JSON form has), so a draft carries this MAPI property instead.
 */
const DELETE_AFTER_SUBMIT = { id: 'Boolean 0x0E01', value: 'true' };

/**
 * Sends one message through Microsoft Graph with the app token, for tenants that turned SMTP
 * AUTH off. It goes as MIME, so every header the relay set (From, Reply-To, Message-ID, X-…)
 * reaches Exchange as written; Exchange builds the message from it as it does for SMTP.
 *
 * - Up to 3 MB (GRAPH_MIME_LIMIT), with Sent Items kept: one sendMail request.
 * - Larger, or with `save_to_sent_items: false`: a draft created from the MIME without its
 *   largest attachments (POST /users/{mailbox}/messages), each of those added on its own
 *   (a POST under 3 MB, an upload session in chunks of 3.75 MiB from 3 MB to 150 MB), then
 *   POST …/send. Each attachment is decoded as the message is read and uploaded a chunk at a
 *   time: memory holds one chunk, never the message. If a step fails the draft is deleted (best
 *   effort) and the failure classified like any other.
 *
 * The mailbox in the URL is the From mailbox (the account's address): with the application
 * permission Mail.Send the app sends as any mailbox its access policy covers, a shared mailbox
 * included, and the copy lands in that mailbox's Sent Items. /users/{delegate} with a shared From
 * would need a Send As grant to the delegate as well and puts the copy in the delegate's mailbox.
 *
 * Graph has no envelope: it delivers to the To/Cc/Bcc headers. Envelope recipients the headers
 * don't name (real Bcc) are added as a Bcc header, which Graph delivers to and removes.
 */
export async function sendViaGraph(tokens: TokenProvider, account: Account, envelope: UpstreamEnvelope, message: Readable, opts: GraphSendOptions = {}): Promise<GraphOutcome> {
  const mailbox = account.address;
  const base = `${account.server.graphUrl.replace(/\/+$/, '')}/v1.0/users/${encodeURIComponent(mailbox)}`;
  const where = `Microsoft Graph (${account.server.name}, ${new URL(base).host}) for mailbox ${mailbox}`;
  const api = new GraphRequests(tokens, account, where, mailbox, opts.maxThrottleWaitMs ?? 30_000);
  const withBcc = (raw: Readable, ours = false) => {
    const rewritten = raw.pipe(new HeaderRewriteStream({ maxHeaderBytes: 1024 * 1024, onHeaders: (h) => addEnvelopeBcc(h, envelope.to) }));
    raw.on('error', (err) => rewritten.destroy(err));
    // a pass that stops early destroys what it reads: a file it opened must close too
    if (ours) rewritten.on('close', () => raw.destroy());
    return rewritten;
  };
  const accepted = { accepted: [...envelope.to] };

  const head = await readHead(withBcc(message), GRAPH_MIME_LIMIT);
  if (head.complete && account.server.saveToSentItems) {
    const body = head.bytes.toString('base64');
    await api.call('POST', `${base}/sendMail`, 'sendMail', { contentType: 'text/plain', body: () => body });
    return { ...accepted, upstreamReply: '202 Accepted by Microsoft Graph' };
  }
  const source = await replayable(head, message, withBcc, opts);
  try {
    const uploaded = await sendAsDraft(api, base, source.open, account.server.saveToSentItems, where);
    return { ...accepted, upstreamReply: `202 Accepted by Microsoft Graph (sent as a draft${uploaded ? ` with ${uploaded} attachment${uploaded === 1 ? '' : 's'} added separately` : ''})` };
  } finally {
    await source.dispose();
  }
}

/** The draft path (see sendViaGraph); resolves with the number of attachments added separately. */
async function sendAsDraft(api: GraphRequests, base: string, open: () => Readable, saveToSentItems: boolean, where: string): Promise<number> {
  const surveyed = await survey(open());
  const detach = partsToDetach(surveyed, GRAPH_MIME_LIMIT);
  if (!detach) throw graphTooLarge(where, `its text parts alone are larger than the 3 MB of MIME a Graph request takes`);
  const huge = detach.find((p) => p.decodedBytes > GRAPH_MAX_ATTACHMENT);
  if (huge) throw graphTooLarge(where, `attachment ${nameOf(huge)} has ${huge.decodedBytes} bytes; Graph takes at most 150 MB per attachment`);
  const detached = new Set(detach.map((p) => p.index));
  const mime = await draftMime(open(), detached, GRAPH_MIME_LIMIT);
  if (!mime) throw graphTooLarge(where, 'the message without its attachments does not fit one Graph request');

  const draftBody = mime.toString('base64');
  const draft = (await api.call('POST', `${base}/messages`, 'creating the draft', { contentType: 'text/plain', body: () => draftBody })) as { id?: string } | undefined;
  if (!draft?.id) throw new Error(`${where}: creating the draft gave no message id`);
  const messageUrl = `${base}/messages/${encodeURIComponent(draft.id)}`;
  try {
    if (!saveToSentItems) {
      const patch = JSON.stringify({ singleValueExtendedProperties: [DELETE_AFTER_SUBMIT] });
      await api.call('PATCH', messageUrl, 'turning off the Sent Items copy', { contentType: 'application/json', body: () => patch });
    }
    const byIndex = new Map(detach.map((p) => [p.index, p]));
    await attachmentParts(open(), detached, async (index) => {
      const part = byIndex.get(index)!;
      return part.decodedBytes < GRAPH_POST_ATTACHMENT_LIMIT ? postedAttachment(api, messageUrl, part) : uploadSession(api, messageUrl, part);
    });
    await api.call('POST', `${messageUrl}/send`, 'sending the draft');
  } catch (err) {
    // a draft left behind would sit in the mailbox's Drafts folder; a failed delete changes nothing about the failure
    await api.call('DELETE', messageUrl, 'deleting the draft', { noWait: true }).catch(() => undefined);
    throw err;
  }
  return detach.length;
}

function nameOf(part: MimePart): string {
  return part.name ?? (part.contentType === 'message/rfc822' ? 'message.eml' : `attachment-${part.index}`);
}

function attachmentItem(part: MimePart): Record<string, unknown> {
  return { name: nameOf(part), contentType: part.contentType, isInline: part.inline, ...(part.contentId ? { contentId: part.contentId } : {}) };
}

/** An attachment under 3 MB: collected (decoded) and added in one POST. */
function postedAttachment(api: GraphRequests, messageUrl: string, part: MimePart): { write(piece: Buffer): Promise<void>; end(): Promise<void> } {
  const pieces: Buffer[] = [];
  return {
    write: async (piece) => void pieces.push(piece),
    end: async () => {
      const body = JSON.stringify({ '@odata.type': '#microsoft.graph.fileAttachment', ...attachmentItem(part), contentBytes: Buffer.concat(pieces).toString('base64') });
      pieces.length = 0;
      await api.call('POST', `${messageUrl}/attachments`, `adding attachment ${nameOf(part)}`, { contentType: 'application/json', body: () => body });
    },
  };
}

/** An attachment of 3 MB or more: an upload session, fed chunk by chunk as the part is decoded. */
async function uploadSession(api: GraphRequests, messageUrl: string, part: MimePart): Promise<ChunkedUpload> {
  const request = JSON.stringify({ AttachmentItem: { attachmentType: 'file', ...attachmentItem(part), size: part.decodedBytes } });
  const session = (await api.call('POST', `${messageUrl}/attachments/createUploadSession`, `creating the upload session for ${nameOf(part)}`, { contentType: 'application/json', body: () => request })) as
    | { uploadUrl?: string }
    | undefined;
  const uploadUrl = session?.uploadUrl;
  if (!uploadUrl) throw new Error(`creating the upload session for ${nameOf(part)} gave no uploadUrl`);
  return new ChunkedUpload(part.decodedBytes, async (chunk, range) => {
    // the upload URL is pre-authenticated: Microsoft says to send no Authorization header with it
    await api.call('PUT', uploadUrl, `uploading ${nameOf(part)} (${contentRange(range)})`, {
      anonymous: true,
      contentType: 'application/octet-stream',
      headers: { 'content-range': contentRange(range) },
      body: () => chunk,
    });
  });
}

type Head = { complete: true; bytes: Buffer } | { complete: false; chunks: Buffer[]; rest: AsyncIterator<Buffer>; stream: Readable };

/** Reads the message until it ends or passes `limit` bytes. */
async function readHead(stream: Readable, limit: number): Promise<Head> {
  const it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const chunks: Buffer[] = [];
  let size = 0;
  for (;;) {
    const r = await it.next();
    if (r.done) return { complete: true, bytes: Buffer.concat(chunks) };
    chunks.push(r.value);
    size += r.value.length;
    if (size > limit) return { complete: false, chunks, rest: it, stream };
  }
}

/** The message, readable from the start as often as the draft path needs. */
async function replayable(head: Head, message: Readable, withBcc: (raw: Readable, ours: boolean) => Readable, opts: GraphSendOptions): Promise<{ open: () => Readable; dispose: () => Promise<void> }> {
  if (head.complete) return { open: () => Readable.from([head.bytes]), dispose: async () => undefined };
  if (opts.reopen) {
    const reopen = opts.reopen;
    head.stream.destroy();
    message.destroy();
    return { open: () => withBcc(reopen(), true), dispose: async () => undefined };
  }
  // the client's own stream (passthrough) can be read once: spool it, the file is read three times
  const root = opts.spoolDir ?? tmpdir();
  await mkdir(root, { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(join(root, 'graph-'));
  const file = join(dir, 'message.eml');
  const dispose = () => rm(dir, { recursive: true, force: true });
  try {
    const { chunks, rest } = head;
    await pipeline(
      Readable.from(
        (async function* () {
          yield* chunks.splice(0);
          for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value;
        })(),
      ),
      createWriteStream(file, { mode: 0o600 }),
    );
  } catch (err) {
    await dispose();
    throw err;
  }
  return { open: () => createReadStream(file), dispose };
}

function addEnvelopeBcc(headers: Headers, envelopeTo: readonly string[]): void {
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
