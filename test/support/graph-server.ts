/**
 * A local Microsoft Graph `sendMail` endpoint in "send MIME" mode, on loopback, for end-to-end
 * tests of the relay's Graph delivery:
 *
 *   POST {url}/v1.0/users/{mailbox}/sendMail   (also {url}/v1.0/me/sendMail for delegated tokens)
 *   Authorization: Bearer <token>
 *   Content-Type: text/plain
 *   <base64 of the MIME message>
 *
 * Answers like Graph: 202 with an empty body on success; errors are JSON
 * `{ error: { code, message } }`:
 * - 429 ApplicationThrottled + `Retry-After` for the next `throttleNext` requests (checked first);
 * - 401 InvalidAuthenticationToken (+ `WWW-Authenticate: Bearer …`) without a bearer token or when
 *   validateToken says not ok;
 * - 403 ErrorAccessDenied when the token may not send as the mailbox: with `mailboxes`, an app-only
 *   token may send only as those; a delegated token whose `user` is known may send as that user
 *   and as the `mailboxes` (shared mailboxes with Send As);
 * - 400 BadRequest for /me with an app-only token ("/me request is only valid with delegated
 *   authentication flow.");
 * - 415 UnsupportedMediaType for a Content-Type other than text/plain (this server implements only
 *   the MIME mode, not the JSON message mode);
 * - 400 ErrorMimeContentInvalidBase64String "Invalid base64 string for MIME content." for a body
 *   that is not base64 or does not decode to a MIME message (a header section of `Name: value`
 *   lines); 400 ErrorInvalidRecipients when the message has no To/Cc/Bcc header (Graph sends to the
 *   header recipients: there is no separate envelope);
 * - 413 RequestEntityTooLarge above `maxRequestBytes` (Graph's request limit is about 4 MB; not
 *   enforced unless set).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface GraphTokenCheck {
  ok: boolean;
  /** true for an application (client_credentials) token, false for a delegated (user) token */
  appOnly: boolean;
  /** for a delegated token: the user it acts for (enables /me and the own-mailbox rule) */
  user?: string | null;
}

export interface GraphServerOptions {
  validateToken: (token: string) => GraphTokenCheck | Promise<GraphTokenCheck>;
  /** answer the next N sendMail requests with 429 ApplicationThrottled */
  throttleNext?: number;
  /** Retry-After seconds of a 429 (default 1) */
  retryAfterSeconds?: number;
  /** mailboxes the app may send as (case-insensitive); unset = any mailbox */
  mailboxes?: string[];
  /** answer 413 when the request body is larger (default: no limit) */
  maxRequestBytes?: number;
  /**
   * users of the tenant for `GET /v1.0/users/{id}` (case-insensitive); unset = any address exists.
   * The lookup answers 200 {id, mail, userPrincipalName}, 404 Request_ResourceNotFound, or 401 for a bad token.
   */
  users?: string[];
  /** `GET /v1.0/users/{id}` answers 403 Authorization_RequestDenied (an app with Mail.Send only) */
  denyUserRead?: boolean;
}

export interface GraphMessage {
  /** mailbox from the URL (decoded), or the token's user for /me */
  mailbox: string;
  token: string;
  /** the decoded MIME message */
  mime: Buffer;
  appOnly: boolean;
}

export interface GraphRequestRecord {
  status: number;
  mailbox: string;
  /** Graph error code when status is not 202 */
  code?: string;
  /** ms since epoch */
  at: number;
}

export interface GraphServer {
  /** base to use as the Graph endpoint, e.g. http://127.0.0.1:PORT (requests go to {url}/v1.0/...) */
  url: string;
  /** accepted messages, in order */
  messages: GraphMessage[];
  /** every request to a sendMail route, in order */
  requests: GraphRequestRecord[];
  /** every `GET /v1.0/users/{id}`, in order */
  userLookups: GraphRequestRecord[];
  /** resolves with the next accepted message not yet returned by nextMessage (default timeout 10 s) */
  nextMessage(timeoutMs?: number): Promise<GraphMessage>;
  /** answer the next `count` requests with 429 (adds to what is left of throttleNext) */
  throttle(count: number): void;
  close(): Promise<void>;
}

const DEFAULT_NEXT_MESSAGE_TIMEOUT_MS = 10_000;
const HARD_BODY_LIMIT = 200 * 1024 * 1024;
const SEND_MAIL_PATH = /^\/v1\.0\/(?:users\/([^/]+)|me)\/sendmail$/i;
const USER_PATH = /^\/v1\.0\/users\/([^/]+)$/i;

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
function parseHeaders(mime: Buffer): Map<string, string[]> | undefined {
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

export async function startGraphServer(opts: GraphServerOptions): Promise<GraphServer> {
  const messages: GraphMessage[] = [];
  const requests: GraphRequestRecord[] = [];
  const allowed = opts.mailboxes ? new Set(opts.mailboxes.map((m) => m.toLowerCase())) : undefined;
  let throttleLeft = opts.throttleNext ?? 0;
  let consumed = 0;
  let closed = false;
  const waiters: { resolve: (m: GraphMessage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];

  const deliverToWaiters = (): void => {
    while (waiters.length > 0 && consumed < messages.length) {
      const w = waiters.shift()!;
      clearTimeout(w.timer);
      w.resolve(messages[consumed++]!);
    }
  };

  const send = (req: IncomingMessage, res: ServerResponse, status: number, error?: GraphError): void => {
    const requestId = randomUUID();
    const common: Record<string, string> = {
      'request-id': requestId,
      'client-request-id': (req.headers['client-request-id'] as string | undefined) ?? requestId,
    };
    if (!error) {
      res.writeHead(status, { ...common, 'Content-Length': '0' });
      res.end();
      return;
    }
    const body = JSON.stringify({
      error: { code: error.code, message: error.message, innerError: { date: new Date().toISOString().slice(0, 19), 'request-id': requestId, 'client-request-id': common['client-request-id'] } },
    });
    res.writeHead(status, { ...common, ...error.headers, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };

  const handleSendMail = async (req: IncomingMessage, pathMailbox: string | undefined): Promise<{ mailbox: string; msg?: GraphMessage }> => {
    let mailbox = pathMailbox ?? 'me';
    // the body is read in full before answering, like a real HTTP server would (no early reply mid-upload)
    const body = await readBody(req, opts.maxRequestBytes ?? HARD_BODY_LIMIT).catch((e: unknown) => e as Error);

    if (throttleLeft > 0) {
      throttleLeft--;
      throw Object.assign(
        new GraphError(429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.', { 'Retry-After': String(opts.retryAfterSeconds ?? 1) }),
        { mailbox },
      );
    }
    const fail = (e: GraphError): never => {
      throw Object.assign(e, { mailbox });
    };

    const authz = req.headers.authorization ?? '';
    const bearer = /^bearer\s+(\S+)\s*$/i.exec(authz);
    const challenge = {
      'WWW-Authenticate':
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"',
    };
    if (!bearer) fail(new GraphError(401, 'InvalidAuthenticationToken', 'Access token is empty.', challenge));
    const token = bearer![1]!;
    const check = await opts.validateToken(token);
    if (!check.ok) fail(new GraphError(401, 'InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.', challenge));

    if (pathMailbox === undefined) {
      if (check.appOnly) fail(new GraphError(400, 'BadRequest', '/me request is only valid with delegated authentication flow.'));
      mailbox = check.user ?? 'me';
    }
    const own = !check.appOnly && check.user != null && check.user.toLowerCase() === mailbox.toLowerCase();
    const delegatedUnknownUser = !check.appOnly && check.user == null;
    if (!own) {
      const permitted = allowed ? allowed.has(mailbox.toLowerCase()) : check.appOnly || delegatedUnknownUser;
      if (!permitted) fail(new GraphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.'));
    }

    if (body instanceof Error) fail(body instanceof GraphError ? body : new GraphError(400, 'BadRequest', body.message));
    const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (ct !== 'text/plain') {
      fail(new GraphError(415, 'UnsupportedMediaType', `Content-Type '${ct || 'none'}' is not supported by this test server: use text/plain with a base64 MIME message.`));
    }
    const mime = decodeBase64((body as Buffer).toString('latin1'));
    const headers = mime && parseHeaders(mime);
    if (!mime || !headers) fail(new GraphError(400, 'ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.'));
    if (!['to', 'cc', 'bcc'].some((h) => headers!.get(h)?.some((v) => v.includes('@')))) {
      fail(new GraphError(400, 'ErrorInvalidRecipients', "At least one recipient is not valid., A message can't be sent because it contains no recipients."));
    }
    return { mailbox, msg: { mailbox, token, mime: mime!, appOnly: check.appOnly } };
  };

  const userLookups: GraphRequestRecord[] = [];
  const users = opts.users ? new Set(opts.users.map((u) => u.toLowerCase())) : undefined;
  const lookUpUser = async (req: IncomingMessage, res: ServerResponse, id: string): Promise<void> => {
    req.resume();
    const bearer = /^bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const check = bearer ? await opts.validateToken(bearer[1]!) : undefined;
    const answer = (status: number, error?: GraphError, body?: object): void => {
      userLookups.push({ status, mailbox: id, ...(error ? { code: error.code } : {}), at: Date.now() });
      if (body) {
        const text = JSON.stringify(body);
        res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
        res.end(text);
      } else send(req, res, status, error);
    };
    if (!check?.ok) return answer(401, new GraphError(401, 'InvalidAuthenticationToken', 'Access token validation failure. Invalid audience.'));
    if (opts.denyUserRead) return answer(403, new GraphError(403, 'Authorization_RequestDenied', 'Insufficient privileges to complete the operation.'));
    if (users && !users.has(id.toLowerCase())) return answer(404, new GraphError(404, 'Request_ResourceNotFound', `Resource '${id}' does not exist or one of its queried reference-property objects are not present.`));
    answer(200, undefined, { id: randomUUID(), mail: id, userPrincipalName: id });
  };

  const http = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const user = req.method === 'GET' ? USER_PATH.exec(path) : null;
    if (user) {
      void lookUpUser(req, res, decodeURIComponent(user[1]!));
      return;
    }
    const m = SEND_MAIL_PATH.exec(path);
    if (!m) {
      send(req, res, 404, new GraphError(404, 'NotFound', `Resource not found for the segment '${path}' (test Graph server: only sendMail).`));
      return;
    }
    let pathMailbox: string | undefined;
    if (m[1] !== undefined) {
      try {
        pathMailbox = decodeURIComponent(m[1]);
      } catch {
        pathMailbox = m[1];
      }
    }
    if (req.method !== 'POST') {
      req.resume();
      const e = new GraphError(405, 'Request_BadRequest', `The method ${req.method} is not allowed on sendMail.`, { Allow: 'POST' });
      requests.push({ status: 405, mailbox: pathMailbox ?? 'me', code: e.code, at: Date.now() });
      send(req, res, 405, e);
      return;
    }
    const at = Date.now();
    handleSendMail(req, pathMailbox).then(
      ({ mailbox, msg }) => {
        requests.push({ status: 202, mailbox, at });
        messages.push(msg!);
        deliverToWaiters();
        send(req, res, 202);
      },
      (e: unknown) => {
        const err = e instanceof GraphError ? e : new GraphError(500, 'InternalServerError', String(e));
        const mailbox = (e as { mailbox?: string }).mailbox ?? pathMailbox ?? 'me';
        requests.push({ status: err.status, mailbox, code: err.code, at });
        if (!res.destroyed) send(req, res, err.status, err);
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
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;

  return {
    url,
    messages,
    requests,
    userLookups,
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
