/**
 * A local Microsoft Graph mail endpoint on loopback, for end-to-end tests of the relay's Graph
 * delivery. Two ways to send, as Graph has them:
 *
 *   POST {url}/v1.0/users/{mailbox}/sendMail   (also {url}/v1.0/me/sendMail for delegated tokens)
 *     Content-Type: text/plain, body: the base64 of the MIME message → 202
 *
 *   the draft path, for messages over sendMail's 4 MB request:
 *   POST   …/users/{mailbox}/messages                      base64 MIME (text/plain) → 201 {id}
 *   PATCH  …/users/{mailbox}/messages/{id}                 JSON (singleValueExtendedProperties) → 200
 *   POST   …/users/{mailbox}/messages/{id}/attachments     JSON fileAttachment (contentBytes) → 201
 *   POST   …/users/{mailbox}/messages/{id}/attachments/createUploadSession
 *            {AttachmentItem: {attachmentType: 'file', name, size, contentType?, isInline?, contentId?}} → 201 {uploadUrl}
 *   PUT    {uploadUrl}   no Authorization (the URL is pre-authenticated), Content-Range: bytes a-b/total
 *            → 200 {nextExpectedRanges} until the last byte, then 201 + Location
 *   POST   …/users/{mailbox}/messages/{id}/send           → 202
 *   DELETE …/users/{mailbox}/messages/{id}                 → 204
 *
 * Answers like Graph, errors as JSON `{ error: { code, message } }`:
 * - 429 ApplicationThrottled + `Retry-After` for the next `throttleNext` /v1.0 requests (checked first);
 * - 401 InvalidAuthenticationToken (+ `WWW-Authenticate: Bearer …`) without a bearer token or when
 *   validateToken says not ok;
 * - 403 ErrorAccessDenied when the token may not act for the mailbox: with `mailboxes`, an app-only
 *   token may act only for those (an application access policy); a delegated token whose `user`
 *   is known may act for that user and for the `mailboxes` (shared mailboxes with Send As);
 * - 400 BadRequest for /me with an app-only token;
 * - 415 UnsupportedMediaType for a message body other than text/plain (only MIME is implemented);
 * - 400 ErrorMimeContentInvalidBase64String for a body that is not base64 of a MIME message;
 *   400 ErrorInvalidRecipients when sending a message with no To/Cc/Bcc header;
 * - 404 ErrorItemNotFound for a draft that does not exist (or another mailbox's);
 * - createUploadSession: 400 ErrorAttachmentSizeShouldNotBeLessThanMinimumSize under 3 MB
 *   (Microsoft: "between 3 MB and 150 MB", smaller files are POSTed), 413 ErrorMessageSizeExceeded
 *   over 150 MB;
 * - PUT: 400 with an Authorization header (Microsoft: "Do not specify an Authorization request
 *   header"), 416 InvalidRange when Content-Range does not start at the next expected byte, does
 *   not name the session's size as total, or does not match the body's length; 413 for a chunk
 *   over 4 MiB; 400 InvalidChunkSize for a chunk that is not the last and not a multiple of
 *   320 KiB (what Microsoft asks of upload sessions);
 * - 413 RequestEntityTooLarge above `maxRequestBytes` (Graph's request limit is about 4 MB; not
 *   enforced unless set) for every /v1.0 request;
 * - `failOn` answers a chosen step with a chosen error (to test what the relay does after).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface GraphTokenCheck {
  ok: boolean;
  /** true for an application (client_credentials) token, false for a delegated (user) token */
  appOnly: boolean;
  /** for a delegated token: the user it acts for (enables /me and the own-mailbox rule) */
  user?: string | null;
}

export type GraphStep = 'sendMail' | 'draft' | 'patch' | 'attachment' | 'createUploadSession' | 'upload' | 'send' | 'delete';

export interface GraphServerOptions {
  validateToken: (token: string) => GraphTokenCheck | Promise<GraphTokenCheck>;
  /** answer the next N /v1.0 requests with 429 ApplicationThrottled */
  throttleNext?: number;
  /** Retry-After seconds of a 429 (default 1) */
  retryAfterSeconds?: number;
  /** mailboxes the app may act for (case-insensitive); unset = any mailbox */
  mailboxes?: string[];
  /** answer 413 when a /v1.0 request body is larger (default: no limit) */
  maxRequestBytes?: number;
  /**
   * users of the tenant for `GET /v1.0/users/{id}` (case-insensitive); unset = any address exists.
   * The lookup answers 200 {id, mail, userPrincipalName}, 404 Request_ResourceNotFound, or 401 for a bad token.
   */
  users?: string[];
  /** `GET /v1.0/users/{id}` answers 403 Authorization_RequestDenied (an app with Mail.Send only) */
  denyUserRead?: boolean;
  /** an error for this request instead of its normal answer (after the checks above passed) */
  failOn?: (request: { step: GraphStep; mailbox: string }) => { status: number; code: string; message: string } | undefined;
}

export interface GraphAttachment {
  name: string;
  contentType: string | undefined;
  isInline: boolean;
  contentId: string | undefined;
  /** how it was added: one POST with contentBytes, or an upload session */
  via: 'post' | 'upload';
  bytes: Buffer;
  sha256: string;
  /** upload sessions: each PUT's Content-Range, in order */
  ranges: { start: number; end: number; total: number }[];
}

export interface GraphMessage {
  /** mailbox from the URL (decoded), or the token's user for /me */
  mailbox: string;
  token: string;
  /** sendMail: the decoded MIME message; draft path: the draft's MIME (attachments added separately) */
  mime: Buffer;
  appOnly: boolean;
  via: 'sendMail' | 'draft';
  /** attachments added to the draft (empty for sendMail) */
  attachments: GraphAttachment[];
  /** false when the draft carried PidTagDeleteAfterSubmit (0x0E01) = true: Exchange deletes it once sent */
  savedToSentItems: boolean;
}

/** One `GET /v1.0/users/{id}` (sendas test's mailbox check). */
export type UserLookupRecord = Omit<GraphRequestRecord, 'step'>;

export interface GraphRequestRecord {
  step: GraphStep;
  status: number;
  mailbox: string;
  /** Graph error code when the status is not a success */
  code?: string;
  /** ms since epoch */
  at: number;
}

export interface GraphServer {
  /** base to use as the Graph endpoint, e.g. http://127.0.0.1:PORT (requests go to {url}/v1.0/...) */
  url: string;
  /** sent messages, in order */
  messages: GraphMessage[];
  /** every request, in order */
  requests: GraphRequestRecord[];
  /** every `GET /v1.0/users/{id}`, in order */
  userLookups: UserLookupRecord[];
  /** ids of drafts deleted with DELETE */
  deletedDrafts: string[];
  /** drafts that exist now (created, neither sent nor deleted) */
  openDrafts(): number;
  /** resolves with the next sent message not yet returned by nextMessage (default timeout 10 s) */
  nextMessage(timeoutMs?: number): Promise<GraphMessage>;
  /** answer the next `count` requests with 429 (adds to what is left of throttleNext) */
  throttle(count: number): void;
  close(): Promise<void>;
}

const DEFAULT_NEXT_MESSAGE_TIMEOUT_MS = 10_000;
const HARD_BODY_LIMIT = 200 * 1024 * 1024;
const USER_PATH = /^\/v1\.0\/users\/([^/]+)$/i;
const MB = 1_000_000;
const MIN_UPLOAD_SESSION = 3 * MB;
const MAX_UPLOAD_SESSION = 150 * MB;
const MAX_CHUNK = 4 * 1024 * 1024;
const CHUNK_MULTIPLE = 320 * 1024;
const DELETE_AFTER_SUBMIT = 'boolean 0x0e01';

const ROUTE = /^\/v1\.0\/(?:users\/([^/]+)|me)\/(sendmail|messages)(?:\/([^/]+)(?:\/(send|attachments)(?:\/(createuploadsession))?)?)?$/i;
const UPLOAD_ROUTE = /^\/upload\/([^/]+)$/;

class GraphError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) over = true;
      else chunks.push(c);
      if (size > HARD_BODY_LIMIT) req.destroy();
    });
    req.on('end', () => {
      if (over) reject(new GraphError(413, 'RequestEntityTooLarge', `The request body (${size} bytes) exceeds the maximum size of ${limit} bytes.`));
      else resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
  });
}

/** strict base64 (line breaks and spaces tolerated), or undefined */
function decodeBase64(text: string): Buffer | undefined {
  const compact = text.replace(/[\r\n\t ]+/g, '');
  if (compact.length === 0 || compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(compact)) return undefined;
  return Buffer.from(compact, 'base64');
}

/** the header section as name → values, or undefined when the bytes do not start with one */
export function parseHeaders(mime: Buffer): Map<string, string[]> | undefined {
  const text = mime.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  const head = end < 0 ? text : text.slice(0, end);
  const lines = head.split(/\r?\n/);
  const headers = new Map<string, string[]>();
  let last: string | undefined;
  for (const line of lines) {
    if (/^[ \t]/.test(line) && last) {
      const values = headers.get(last)!;
      values[values.length - 1] += ' ' + line.trim();
      continue;
    }
    const m = /^([!-9;-~]+):(.*)$/.exec(line);
    if (!m) return undefined;
    last = m[1]!.toLowerCase();
    headers.set(last, [...(headers.get(last) ?? []), m[2]!.trim()]);
  }
  return headers.size > 0 ? headers : undefined;
}

interface Draft {
  id: string;
  mailbox: string;
  token: string;
  appOnly: boolean;
  mime: Buffer;
  attachments: GraphAttachment[];
  deleteAfterSubmit: boolean;
}

interface UploadSession {
  draft: Draft;
  size: number;
  next: number;
  chunks: Buffer[];
  ranges: GraphAttachment['ranges'];
  item: { name: string; contentType: string | undefined; isInline: boolean; contentId: string | undefined };
}

export async function startGraphServer(opts: GraphServerOptions): Promise<GraphServer> {
  const messages: GraphMessage[] = [];
  const requests: GraphRequestRecord[] = [];
  const deletedDrafts: string[] = [];
  const drafts = new Map<string, Draft>();
  const sessions = new Map<string, UploadSession>();
  const allowed = opts.mailboxes ? new Set(opts.mailboxes.map((m) => m.toLowerCase())) : undefined;
  let throttleLeft = opts.throttleNext ?? 0;
  let consumed = 0;
  let closed = false;
  let url = '';
  const waiters: { resolve: (m: GraphMessage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];

  const deliverToWaiters = (): void => {
    while (waiters.length > 0 && consumed < messages.length) {
      const w = waiters.shift()!;
      clearTimeout(w.timer);
      w.resolve(messages[consumed++]!);
    }
  };
  // handed to waiters once the request is recorded (see below), so a test sees both together
  const sent = (m: GraphMessage): void => void messages.push(m);

  const answer = (req: IncomingMessage, res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void => {
    const requestId = randomUUID();
    const common: Record<string, string> = {
      'request-id': requestId,
      'client-request-id': (req.headers['client-request-id'] as string | undefined) ?? requestId,
      ...headers,
    };
    if (body instanceof GraphError) {
      body = { error: { code: body.code, message: body.message, innerError: { date: new Date().toISOString().slice(0, 19), 'request-id': requestId, 'client-request-id': common['client-request-id'] } } };
    }
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { ...common, ...(text ? { 'Content-Type': 'application/json' } : {}), 'Content-Length': String(Buffer.byteLength(text)) });
    res.end(text);
  };

  const mimeOf = (req: IncomingMessage, body: Buffer): Buffer => {
    const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (ct !== 'text/plain') throw new GraphError(415, 'UnsupportedMediaType', `Content-Type '${ct || 'none'}' is not supported by this test server: use text/plain with a base64 MIME message.`);
    const mime = decodeBase64(body.toString('latin1'));
    if (!mime || !parseHeaders(mime)) throw new GraphError(400, 'ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.');
    return mime;
  };
  const requireRecipients = (mime: Buffer): void => {
    const headers = parseHeaders(mime)!;
    if (!['to', 'cc', 'bcc'].some((h) => headers.get(h)?.some((v) => v.includes('@')))) {
      throw new GraphError(400, 'ErrorInvalidRecipients', "At least one recipient is not valid., A message can't be sent because it contains no recipients.");
    }
  };
  const json = (body: Buffer): Record<string, unknown> => {
    try {
      return JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new GraphError(400, 'BadRequest', 'Unable to read JSON request payload.');
    }
  };

  /** The /v1.0 routes: throttle, auth, mailbox scope, then the step itself. */
  const handleGraph = async (req: IncomingMessage, m: RegExpExecArray, ctx: { step: GraphStep; mailbox: string }): Promise<{ status: number; body?: unknown; headers?: Record<string, string> }> => {
    const pathMailbox = m[1] === undefined ? undefined : safeDecode(m[1]);
    const [, , collection, id, action, upload] = m;
    const method = req.method ?? 'GET';
    ctx.step = stepOf(collection!.toLowerCase(), method, id, action?.toLowerCase(), upload !== undefined);
    ctx.mailbox = pathMailbox ?? 'me';
    // the body is read in full before answering, like a real HTTP server would (no early reply mid-upload)
    const body = await readBody(req, opts.maxRequestBytes ?? HARD_BODY_LIMIT).catch((e: unknown) => e as Error);
    if (!allowedMethod(ctx.step, method)) throw new GraphError(405, 'Request_BadRequest', `The method ${method} is not allowed here.`, { Allow: ctx.step === 'delete' ? 'DELETE, PATCH' : 'POST' });

    if (throttleLeft > 0) {
      throttleLeft--;
      throw new GraphError(429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.', { 'Retry-After': String(opts.retryAfterSeconds ?? 1) });
    }
    const bearer = /^bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const challenge = {
      'WWW-Authenticate': 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"',
    };
    if (!bearer) throw new GraphError(401, 'InvalidAuthenticationToken', 'Access token is empty.', challenge);
    const token = bearer[1]!;
    const check = await opts.validateToken(token);
    if (!check.ok) throw new GraphError(401, 'InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.', challenge);
    if (pathMailbox === undefined) {
      if (check.appOnly) throw new GraphError(400, 'BadRequest', '/me request is only valid with delegated authentication flow.');
      ctx.mailbox = check.user ?? 'me';
    }
    const mailbox = ctx.mailbox;
    const own = !check.appOnly && check.user != null && check.user.toLowerCase() === mailbox.toLowerCase();
    if (!own) {
      const permitted = allowed ? allowed.has(mailbox.toLowerCase()) : check.appOnly || check.user == null;
      if (!permitted) throw new GraphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.');
    }
    if (body instanceof Error) throw body instanceof GraphError ? body : new GraphError(400, 'BadRequest', body.message);
    const injected = opts.failOn?.({ step: ctx.step, mailbox });
    if (injected) throw new GraphError(injected.status, injected.code, injected.message);

    const draft = (): Draft => {
      const d = drafts.get(safeDecode(id!));
      if (!d || d.mailbox.toLowerCase() !== mailbox.toLowerCase()) throw new GraphError(404, 'ErrorItemNotFound', 'The specified object was not found in the store.');
      return d;
    };
    switch (ctx.step) {
      case 'sendMail': {
        const mime = mimeOf(req, body);
        requireRecipients(mime);
        sent({ mailbox, token, mime, appOnly: check.appOnly, via: 'sendMail', attachments: [], savedToSentItems: true });
        return { status: 202 };
      }
      case 'draft': {
        const d: Draft = { id: randomUUID(), mailbox, token, appOnly: check.appOnly, mime: mimeOf(req, body), attachments: [], deleteAfterSubmit: false };
        drafts.set(d.id, d);
        return { status: 201, body: { id: d.id, isDraft: true } };
      }
      case 'patch': {
        const d = draft();
        const props = json(body).singleValueExtendedProperties;
        for (const p of Array.isArray(props) ? (props as { id?: string; value?: string }[]) : []) {
          if (String(p.id).toLowerCase() === DELETE_AFTER_SUBMIT) d.deleteAfterSubmit = String(p.value).toLowerCase() === 'true';
        }
        return { status: 200, body: { id: d.id, isDraft: true } };
      }
      case 'attachment': {
        const d = draft();
        const a = json(body) as { '@odata.type'?: string; name?: string; contentType?: string; contentBytes?: string; isInline?: boolean; contentId?: string };
        const bytes = a['@odata.type'] === '#microsoft.graph.fileAttachment' && typeof a.contentBytes === 'string' ? decodeBase64(a.contentBytes) : undefined;
        if (!bytes || !a.name) throw new GraphError(400, 'ErrorInvalidRequest', 'A fileAttachment needs @odata.type, name and base64 contentBytes.');
        d.attachments.push({ name: a.name, contentType: a.contentType, isInline: a.isInline === true, contentId: a.contentId, via: 'post', bytes, sha256: sha256(bytes), ranges: [] });
        return { status: 201, body: { id: randomUUID(), name: a.name, size: bytes.length } };
      }
      case 'createUploadSession': {
        const d = draft();
        const item = (json(body).AttachmentItem ?? {}) as { attachmentType?: string; name?: string; size?: number; contentType?: string; isInline?: boolean; contentId?: string };
        if (item.attachmentType !== 'file' || !item.name || !Number.isInteger(item.size)) throw new GraphError(400, 'ErrorInvalidRequest', 'AttachmentItem needs attachmentType file, name and size.');
        if (item.size! < MIN_UPLOAD_SESSION) throw new GraphError(400, 'ErrorAttachmentSizeShouldNotBeLessThanMinimumSize', 'Attachment size must be greater than the minimum size.');
        if (item.size! > MAX_UPLOAD_SESSION) throw new GraphError(413, 'ErrorMessageSizeExceeded', 'The message exceeds the maximum supported size.');
        const sessionId = randomUUID();
        sessions.set(sessionId, { draft: d, size: item.size!, next: 0, chunks: [], ranges: [], item: { name: item.name, contentType: item.contentType, isInline: item.isInline === true, contentId: item.contentId } });
        return {
          status: 201,
          body: { uploadUrl: `${url}/upload/${sessionId}?authtoken=${randomUUID()}`, expirationDateTime: new Date(Date.now() + 15 * 60_000).toISOString(), nextExpectedRanges: ['0-'] },
        };
      }
      case 'send': {
        const d = draft();
        requireRecipients(d.mime);
        drafts.delete(d.id);
        sent({ mailbox, token: d.token, mime: d.mime, appOnly: d.appOnly, via: 'draft', attachments: d.attachments, savedToSentItems: !d.deleteAfterSubmit });
        return { status: 202 };
      }
      case 'delete': {
        const d = draft();
        drafts.delete(d.id);
        deletedDrafts.push(d.id);
        return { status: 204 };
      }
      default:
        throw new GraphError(404, 'NotFound', 'unknown step');
    }
  };

  /** One PUT of an upload session (the pre-authenticated URL: no token, no throttling here). */
  const handleUpload = async (req: IncomingMessage, sessionId: string): Promise<{ status: number; body?: unknown; headers?: Record<string, string> }> => {
    const body = await readBody(req, HARD_BODY_LIMIT);
    const s = sessions.get(sessionId);
    if (req.method !== 'PUT') throw new GraphError(405, 'Request_BadRequest', 'Upload with PUT.', { Allow: 'PUT' });
    if (!s) throw new GraphError(404, 'ErrorItemNotFound', 'The upload session was not found (expired, finished or deleted).');
    if (req.headers.authorization) throw new GraphError(400, 'InvalidRequest', 'The upload URL is pre-authenticated: do not send an Authorization header.');
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(req.headers['content-range'] ?? '');
    if (!range) throw new GraphError(400, 'InvalidContentRange', `Content-Range must be "bytes start-end/total", got "${req.headers['content-range'] ?? ''}".`);
    const [start, end, total] = [Number(range[1]), Number(range[2]), Number(range[3])];
    const length = end - start + 1;
    if (total !== s.size || start !== s.next || length !== body.length || Number(req.headers['content-length']) !== body.length || length <= 0) {
      throw new GraphError(416, 'InvalidRange', `Expected bytes ${s.next}-…/${s.size} matching the body (${body.length} bytes), got ${range[0]}.`);
    }
    if (length > MAX_CHUNK) throw new GraphError(413, 'RequestEntityTooLarge', `A chunk may have at most ${MAX_CHUNK} bytes, this one has ${length}.`);
    const last = end + 1 === total;
    if (!last && length % CHUNK_MULTIPLE !== 0) throw new GraphError(400, 'InvalidChunkSize', `Every chunk but the last must be a multiple of 320 KiB (${CHUNK_MULTIPLE} bytes); this one has ${length}.`);
    s.chunks.push(body);
    s.ranges.push({ start, end, total });
    s.next = end + 1;
    if (!last) return { status: 200, body: { expirationDateTime: new Date(Date.now() + 15 * 60_000).toISOString(), nextExpectedRanges: [`${s.next}`] } };
    sessions.delete(sessionId);
    const bytes = Buffer.concat(s.chunks);
    const attachmentId = randomUUID();
    s.draft.attachments.push({ ...s.item, via: 'upload', bytes, sha256: sha256(bytes), ranges: s.ranges });
    return { status: 201, headers: { Location: `${url}/v1.0/users('${encodeURIComponent(s.draft.mailbox)}')/messages('${s.draft.id}')/attachments('${attachmentId}')` } };
  };

  const userLookups: UserLookupRecord[] = [];
  const users = opts.users ? new Set(opts.users.map((u) => u.toLowerCase())) : undefined;
  const lookUpUser = async (req: IncomingMessage, res: ServerResponse, id: string): Promise<void> => {
    req.resume();
    const bearer = /^bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const check = bearer ? await opts.validateToken(bearer[1]!) : undefined;
    const reply = (status: number, error?: GraphError, body?: object): void => {
      userLookups.push({ status, mailbox: id, ...(error ? { code: error.code } : {}), at: Date.now() });
      answer(req, res, status, body ?? error);
    };
    if (!check?.ok) return reply(401, new GraphError(401, 'InvalidAuthenticationToken', 'Access token validation failure. Invalid audience.'));
    if (opts.denyUserRead) return reply(403, new GraphError(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.'));
    if (users && !users.has(id.toLowerCase())) return reply(404, new GraphError(404, 'Request_ResourceNotFound', `Resource '${id}' does not exist or one of its queried reference-property objects are not present.`));
    reply(200, undefined, { id: randomUUID(), mail: id, userPrincipalName: id });
  };

  const http = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const user = req.method === 'GET' ? USER_PATH.exec(path) : null;
    if (user) {
      void lookUpUser(req, res, decodeURIComponent(user[1]!));
      return;
    }
    const m = ROUTE.exec(path);
    const up = UPLOAD_ROUTE.exec(path);
    if (!m && !up) {
      req.resume();
      answer(req, res, 404, new GraphError(404, 'NotFound', `Resource not found for the segment '${path}' (test Graph server: mail sending only).`));
      return;
    }
    const at = Date.now();
    const ctx: { step: GraphStep; mailbox: string } = { step: up ? 'upload' : 'sendMail', mailbox: up ? 'upload' : 'me' };
    (up ? handleUpload(req, up[1]!) : handleGraph(req, m!, ctx)).then(
      (r) => {
        requests.push({ step: ctx.step, status: r.status, mailbox: ctx.mailbox, at });
        deliverToWaiters();
        answer(req, res, r.status, r.body, r.headers);
      },
      (e: unknown) => {
        const err = e instanceof GraphError ? e : new GraphError(500, 'InternalServerError', String(e));
        requests.push({ step: ctx.step, status: err.status, mailbox: ctx.mailbox, code: err.code, at });
        if (!res.destroyed) answer(req, res, err.status, err, err.headers);
      },
    );
  });
  http.on('clientError', (_e, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', () => {
      http.off('error', reject);
      resolve();
    });
  });
  url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;

  return {
    url,
    messages,
    requests,
    userLookups,
    deletedDrafts,
    openDrafts: () => drafts.size,
    nextMessage(timeoutMs = DEFAULT_NEXT_MESSAGE_TIMEOUT_MS) {
      if (consumed < messages.length && waiters.length === 0) return Promise.resolve(messages[consumed++]!);
      if (closed) return Promise.reject(new Error('test Graph server is closed'));
      return new Promise<GraphMessage>((resolve, reject) => {
        const w = {
          resolve,
          reject,
          timer: setTimeout(() => {
            const i = waiters.indexOf(w);
            if (i >= 0) waiters.splice(i, 1);
            reject(new Error(`test Graph server: no message within ${timeoutMs} ms (${messages.length} received so far)`));
          }, timeoutMs),
        };
        waiters.push(w);
      });
    },
    throttle(count) {
      throttleLeft += count;
    },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      for (const w of waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new Error('test Graph server closed while waiting for a message'));
      }
      return new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      });
    },
  };
}

function stepOf(collection: string, method: string, id: string | undefined, action: string | undefined, upload: boolean): GraphStep {
  if (collection === 'sendmail') return 'sendMail';
  if (id === undefined) return 'draft';
  if (action === 'send') return 'send';
  if (action === 'attachments') return upload ? 'createUploadSession' : 'attachment';
  return method === 'PATCH' ? 'patch' : 'delete';
}

function allowedMethod(step: GraphStep, method: string): boolean {
  if (step === 'patch' || step === 'delete') return method === 'PATCH' || method === 'DELETE';
  return method === 'POST';
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
