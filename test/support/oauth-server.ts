/**
 * A local OAuth 2.0 authorization server (token endpoint + RFC 8628 device authorization
 * endpoint), on loopback, for end-to-end tests of the relay's OAuth support. It answers the way
 * Microsoft identity platform / Google do where it matters to a client:
 *
 * - endpoints: `POST /token` and `POST /{tenant}/oauth2/v2.0/token` (Microsoft's path, any tenant),
 *   `POST /devicecode` and `POST /{tenant}/oauth2/v2.0/devicecode`; `GET /device` is the
 *   verification page (a plain HTML page; approval is done by the test with approveDevice()).
 * - requests are `application/x-www-form-urlencoded` POSTs; answers are JSON with
 *   `Cache-Control: no-store` (RFC 6749 §5.1).
 * - client authentication: `client_id` + `client_secret` in the body (client_secret_post) or HTTP
 *   Basic (client_secret_basic, RFC 6749 §2.3.1, the form-url-encoded id/secret accepted too).
 *   Both at once → 400 invalid_request (RFC 6749 §2.3). Unknown client or wrong/missing secret →
 *   401 invalid_client (with `WWW-Authenticate: Basic` when Basic was used), like Microsoft and
 *   Google. A client marked `publicClient` may omit the secret for the refresh_token and device_code
 *   grants (never for client_credentials, like Microsoft's AADSTS7000218).
 * - grants: client_credentials (app token, user null, no refresh token), refresh_token (token for
 *   the refresh token's user; a new refresh token only when `rotateRefreshTokens`, which also
 *   invalidates the old one — without rotation no refresh_token is returned, like Google), and
 *   `urn:ietf:params:oauth:grant-type:device_code` (authorization_pending / access_denied /
 *   expired_token, then access + refresh token; a device code is redeemable once).
 * - unknown, revoked, rotated-away refresh tokens, or one issued to another client →
 *   400 invalid_grant "Token has been expired or revoked." (Google's text).
 * - other grant types → 400 unsupported_grant_type; missing parameters → 400 invalid_request.
 *
 * Tokens are opaque random strings (`at_…`, `rt_…`); test code checks them with validate().
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface OAuthClient {
  clientId: string;
  clientSecret: string;
  /** a public client (desktop app / device flow): may omit the secret for refresh_token and device_code grants; a secret it does send must still be right */
  publicClient?: boolean;
}

export interface OAuthServerOptions {
  clients: OAuthClient[];
  /** expires_in of issued access tokens (default 3600); 0 issues tokens that are already expired */
  accessTokenTtlSeconds?: number;
  /** refresh_token grant returns a new refresh token and invalidates the old one */
  rotateRefreshTokens?: boolean;
  /** valid refresh token -> the user (mailbox) it acts for; usable by any configured client */
  refreshTokens?: Record<string, string>;
  /** scope reported when the request names none (default 'https://outlook.office365.com/.default') */
  defaultScope?: string;
  /** expires_in of device codes (default 900) */
  deviceCodeTtlSeconds?: number;
}

export interface IssuedToken {
  accessToken: string;
  /** the user (mailbox) the token acts for; null for client_credentials (app token) */
  user: string | null;
  clientId: string;
  /** ms since epoch */
  expiresAt: number;
  scope: string;
}

export interface OAuthRequestRecord {
  /** grant_type as sent ('' when missing) */
  grant: string;
  /** client id as presented ('' when none) */
  clientId: string;
  /** ms since epoch, when the request arrived */
  at: number;
  ok: boolean;
  /** the OAuth error code when !ok */
  error?: string;
  /** tenant segment for /{tenant}/oauth2/v2.0/token, undefined for /token */
  tenant?: string;
}

export interface DeviceCodeRecord {
  deviceCode: string;
  userCode: string;
  clientId: string;
  scope: string;
  /** ms since epoch */
  expiresAt: number;
  state: 'pending' | 'approved' | 'denied' | 'redeemed';
  /** the user it was approved for */
  user: string | null;
}

export interface IssuedRefreshToken {
  refreshToken: string;
  user: string;
  /** the client it was issued to; null for tokens given in options / setRefreshToken (usable by any client) */
  clientId: string | null;
  /** false once revoked or rotated away */
  valid: boolean;
}

export interface OAuthServer {
  /** base, e.g. http://127.0.0.1:PORT */
  url: string;
  /** url + '/token' (url + '/{tenant}/oauth2/v2.0/token' works too) */
  tokenUrl: string;
  /** url + '/devicecode' (url + '/{tenant}/oauth2/v2.0/devicecode' works too) */
  deviceCodeUrl: string;
  /** every token-endpoint request, in order of completion */
  requests: OAuthRequestRecord[];
  /** every access token issued, in order */
  issued: IssuedToken[];
  /** refresh tokens known to the server (preset and issued), in order of creation */
  refreshTokens: IssuedRefreshToken[];
  /** device codes handed out by the device-code endpoint, in order */
  deviceCodes: DeviceCodeRecord[];
  /** the issued token if it is known, not expired and not expire()d */
  validate(accessToken: string): IssuedToken | undefined;
  /** later use of the refresh token -> invalid_grant */
  revoke(refreshToken: string): void;
  /** adds (or re-validates) a refresh token usable by any client */
  setRefreshToken(token: string, user: string): void;
  /** Device flow: approve the pending device code (as if the user logged in at the verification URL) for `user`. Throws for an unknown user code. */
  approveDevice(userCode: string, user: string): void;
  /** Device flow: the user declined -> the next poll gets access_denied. */
  denyDevice(userCode: string): void;
  /** resolves with the next device code not yet returned by this method (default timeout 10 s) */
  nextDeviceCode(timeoutMs?: number): Promise<DeviceCodeRecord>;
  /** makes an access token (or all issued so far) invalid for validate(), as if it expired */
  expire(accessToken?: string): void;
  /** make the next `count` (default: all, until released) token requests hang until release() is called */
  hold(count?: number): () => void;
  /** resolves once at least `count` token requests are being held by hold() (default timeout 10 s) */
  waitForHeld(count: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const DEFAULT_WAIT_MS = 10_000;
const MAX_BODY = 64 * 1024;
const TENANT_PATH = /^\/([^/]+)\/oauth2\/v2\.0\/(token|devicecode)$/;

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly description: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(`${code}: ${description}`);
  }
}

function token(prefix: string): string {
  return prefix + randomBytes(24).toString('base64url');
}

function userCode(): string {
  const letters = 'BCDFGHJKLMNPQRSTVWXZ';
  const bytes = randomBytes(8);
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === 4) out += '-';
    out += letters[bytes[i]! % letters.length];
  }
  return out;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new OAuthError(413, 'invalid_request', 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function formDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    Pragma: 'no-cache',
    ...headers,
  });
  res.end(text);
}

interface Gate {
  remaining: number;
  waiting: (() => void)[];
}

export async function startOAuthServer(opts: OAuthServerOptions): Promise<OAuthServer> {
  const ttl = opts.accessTokenTtlSeconds ?? 3600;
  const defaultScope = opts.defaultScope ?? 'https://outlook.office365.com/.default';
  const deviceTtl = opts.deviceCodeTtlSeconds ?? 900;
  const clients = new Map(opts.clients.map((c) => [c.clientId, c]));

  const requests: OAuthRequestRecord[] = [];
  const issued: IssuedToken[] = [];
  const refreshTokens: IssuedRefreshToken[] = [];
  const deviceCodes: DeviceCodeRecord[] = [];
  const accessByToken = new Map<string, IssuedToken>();
  const refreshByToken = new Map<string, IssuedRefreshToken>();
  const refreshScope = new Map<string, string>();
  const expiredByHand = new Set<string>();
  let closed = false;

  for (const [t, user] of Object.entries(opts.refreshTokens ?? {})) addRefresh(t, user, null, defaultScope);

  function addRefresh(t: string, user: string, clientId: string | null, scope: string): IssuedRefreshToken {
    const old = refreshByToken.get(t);
    if (old) old.valid = false;
    const rec: IssuedRefreshToken = { refreshToken: t, user, clientId, valid: true };
    refreshTokens.push(rec);
    refreshByToken.set(t, rec);
    refreshScope.set(t, scope);
    return rec;
  }

  // ---- hold / release --------------------------------------------------------------------------
  const gates: Gate[] = [];
  const heldWaiters: { count: number; resolve: () => void }[] = [];
  const heldCount = (): number => gates.reduce((n, g) => n + g.waiting.length, 0);
  const checkHeld = (): void => {
    const n = heldCount();
    for (let i = heldWaiters.length - 1; i >= 0; i--) {
      if (n >= heldWaiters[i]!.count) heldWaiters.splice(i, 1)[0]!.resolve();
    }
  };
  const passGate = (): Promise<void> | undefined => {
    const gate = gates.find((g) => g.remaining > 0);
    if (!gate) return undefined;
    gate.remaining--;
    return new Promise<void>((resolve) => {
      gate.waiting.push(resolve);
      checkHeld();
    });
  };
  const releaseGate = (gate: Gate): void => {
    const i = gates.indexOf(gate);
    if (i >= 0) gates.splice(i, 1);
    gate.remaining = 0;
    for (const w of gate.waiting.splice(0)) w();
  };

  // ---- device code waiters ---------------------------------------------------------------------
  let deviceConsumed = 0;
  const deviceWaiters: { resolve: (d: DeviceCodeRecord) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  const deliverDevice = (): void => {
    while (deviceWaiters.length > 0 && deviceConsumed < deviceCodes.length) {
      const w = deviceWaiters.shift()!;
      clearTimeout(w.timer);
      w.resolve(deviceCodes[deviceConsumed++]!);
    }
  };

  // ---- request handling ------------------------------------------------------------------------
  function parseForm(req: IncomingMessage, body: string): Map<string, string> {
    const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (ct !== 'application/x-www-form-urlencoded') {
      throw new OAuthError(400, 'invalid_request', `Content-Type must be application/x-www-form-urlencoded (got '${ct || 'none'}')`);
    }
    const params = new Map<string, string>();
    for (const [k, v] of new URLSearchParams(body)) {
      if (params.has(k)) throw new OAuthError(400, 'invalid_request', `parameter '${k}' included more than once`);
      params.set(k, v);
    }
    return params;
  }

  /** returns the authenticated client and the id as presented */
  function authenticateClient(req: IncomingMessage, params: Map<string, string>, secretRequired: boolean): OAuthClient {
    let basic: { id: string; secret: string; rawId: string; rawSecret: string } | undefined;
    const authz = req.headers.authorization;
    if (authz && /^basic /i.test(authz)) {
      const decoded = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw new OAuthError(401, 'invalid_client', 'malformed HTTP Basic client credentials', { 'WWW-Authenticate': 'Basic realm="oauth"' });
      const rawId = decoded.slice(0, colon);
      const rawSecret = decoded.slice(colon + 1);
      basic = { rawId, rawSecret, id: formDecode(rawId), secret: formDecode(rawSecret) };
    }
    const challenge: Record<string, string> = basic ? { 'WWW-Authenticate': 'Basic realm="oauth"' } : {};
    const bodyId = params.get('client_id');
    const bodySecret = params.get('client_secret');
    if (basic && bodySecret !== undefined) {
      throw new OAuthError(400, 'invalid_request', 'The client used more than one authentication method (HTTP Basic and client_secret in the body).');
    }
    if (basic && bodyId !== undefined && bodyId !== basic.id && bodyId !== basic.rawId) {
      throw new OAuthError(400, 'invalid_request', 'client_id in the body does not match the HTTP Basic client credentials.');
    }
    let client: OAuthClient | undefined;
    let presented: string | undefined;
    if (basic) {
      client = clients.get(basic.rawId) ?? clients.get(basic.id);
      presented = client ? (client.clientSecret === basic.rawSecret ? basic.rawSecret : basic.secret) : undefined;
    } else if (bodyId !== undefined) {
      client = clients.get(bodyId);
      presented = bodySecret;
    } else {
      throw new OAuthError(400, 'invalid_request', "The request body must contain the following parameter: 'client_id'.");
    }
    if (!client) {
      throw new OAuthError(401, 'invalid_client', `Client authentication failed: application '${basic?.id ?? bodyId}' was not found.`, challenge);
    }
    if (presented === undefined || presented === '') {
      if (secretRequired || !client.publicClient) {
        throw new OAuthError(401, 'invalid_client', "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.", challenge);
      }
      return client;
    }
    if (presented !== client.clientSecret) {
      throw new OAuthError(401, 'invalid_client', `Invalid client secret provided for client '${client.clientId}'.`, challenge);
    }
    return client;
  }

  function issue(clientId: string, user: string | null, scope: string): IssuedToken {
    const t: IssuedToken = { accessToken: token('at_'), user, clientId, expiresAt: Date.now() + ttl * 1000, scope };
    issued.push(t);
    accessByToken.set(t.accessToken, t);
    return t;
  }

  function tokenResponse(t: IssuedToken, refreshToken?: string): Record<string, unknown> {
    const body: Record<string, unknown> = {
      token_type: 'Bearer',
      scope: t.scope,
      expires_in: ttl,
      access_token: t.accessToken,
    };
    if (refreshToken) body.refresh_token = refreshToken;
    return body;
  }

  function grantError(description: string): OAuthError {
    return new OAuthError(400, 'invalid_grant', description);
  }

  function handleToken(params: Map<string, string>, req: IncomingMessage, grant: string): Record<string, unknown> {
    if (!grant) throw new OAuthError(400, 'invalid_request', "The request body must contain the following parameter: 'grant_type'.");
    if (grant !== 'client_credentials' && grant !== 'refresh_token' && grant !== DEVICE_GRANT) {
      throw new OAuthError(400, 'unsupported_grant_type', `The grant type '${grant}' is not supported by this authorization server.`);
    }
    const client = authenticateClient(req, params, grant === 'client_credentials');
    const requestedScope = params.get('scope');

    if (grant === 'client_credentials') {
      return tokenResponse(issue(client.clientId, null, requestedScope ?? defaultScope));
    }

    if (grant === 'refresh_token') {
      const rt = params.get('refresh_token');
      if (!rt) throw new OAuthError(400, 'invalid_request', "The request body must contain the following parameter: 'refresh_token'.");
      const rec = refreshByToken.get(rt);
      if (!rec || !rec.valid || (rec.clientId !== null && rec.clientId !== client.clientId)) {
        throw grantError('Token has been expired or revoked.');
      }
      const scope = requestedScope ?? refreshScope.get(rt) ?? defaultScope;
      const access = issue(client.clientId, rec.user, scope);
      if (!opts.rotateRefreshTokens) return tokenResponse(access);
      rec.valid = false;
      const next = token('rt_');
      addRefresh(next, rec.user, client.clientId, scope);
      return tokenResponse(access, next);
    }

    // device_code
    const dc = params.get('device_code');
    if (!dc) throw new OAuthError(400, 'invalid_request', "The request body must contain the following parameter: 'device_code'.");
    const rec = deviceCodes.find((d) => d.deviceCode === dc);
    if (!rec || rec.clientId !== client.clientId) throw grantError('The device code is not valid.');
    if (rec.state === 'redeemed') throw grantError('The device code has already been redeemed.');
    if (Date.now() >= rec.expiresAt) throw new OAuthError(400, 'expired_token', 'The device code has expired.');
    if (rec.state === 'denied') throw new OAuthError(400, 'access_denied', 'The end user denied the authorization request.');
    if (rec.state === 'pending') throw new OAuthError(400, 'authorization_pending', 'The user has not yet completed the authorization.');
    rec.state = 'redeemed';
    const access = issue(client.clientId, rec.user!, rec.scope);
    const rt = token('rt_');
    addRefresh(rt, rec.user!, client.clientId, rec.scope);
    return tokenResponse(access, rt);
  }

  function handleDeviceCode(params: Map<string, string>): Record<string, unknown> {
    const clientId = params.get('client_id');
    if (!clientId) throw new OAuthError(400, 'invalid_request', "The request body must contain the following parameter: 'client_id'.");
    if (!clients.has(clientId)) throw new OAuthError(401, 'invalid_client', `Application with identifier '${clientId}' was not found.`);
    const rec: DeviceCodeRecord = {
      deviceCode: token('dc_'),
      userCode: userCode(),
      clientId,
      scope: params.get('scope') ?? defaultScope,
      expiresAt: Date.now() + deviceTtl * 1000,
      state: 'pending',
      user: null,
    };
    deviceCodes.push(rec);
    deliverDevice();
    const verificationUri = `${server.url}/device`;
    return {
      device_code: rec.deviceCode,
      user_code: rec.userCode,
      verification_uri: verificationUri,
      expires_in: deviceTtl,
      interval: 1,
      message: `To sign in, use a web browser to open the page ${verificationUri} and enter the code ${rec.userCode} to authenticate.`,
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    let kind: 'token' | 'devicecode' | undefined;
    let tenant: string | undefined;
    if (path === '/token') kind = 'token';
    else if (path === '/devicecode') kind = 'devicecode';
    else {
      const m = TENANT_PATH.exec(path);
      if (m) {
        tenant = decodeURIComponent(m[1]!);
        kind = m[2] as 'token' | 'devicecode';
      }
    }
    if (req.method === 'GET' && path === '/device') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><title>Device login</title><p>Enter the code shown by your device. (test server: approval is done by the test)</p>');
      return;
    }
    if (!kind) {
      sendJson(res, 404, { error: 'not_found', error_description: `no endpoint at ${path}` });
      return;
    }
    if (req.method !== 'POST') {
      sendJson(res, 405, { error: 'invalid_request', error_description: 'The token endpoint accepts POST only.' }, { Allow: 'POST' });
      return;
    }

    const at = Date.now();
    let body: string;
    try {
      body = await readBody(req);
    } catch (e) {
      const err = e instanceof OAuthError ? e : new OAuthError(400, 'invalid_request', String(e));
      sendJson(res, err.status, { error: err.code, error_description: err.description });
      return;
    }

    if (kind === 'devicecode') {
      try {
        sendJson(res, 200, handleDeviceCode(parseForm(req, body)));
      } catch (e) {
        const err = e instanceof OAuthError ? e : new OAuthError(500, 'server_error', String(e));
        sendJson(res, err.status, { error: err.code, error_description: err.description }, err.headers);
      }
      return;
    }

    const held = passGate();
    if (held) await held;
    if (closed) {
      res.destroy();
      return;
    }

    let grant = '';
    let clientId = '';
    try {
      const params = parseForm(req, body);
      grant = params.get('grant_type') ?? '';
      clientId = params.get('client_id') ?? basicId(req) ?? '';
      const answer = handleToken(params, req, grant);
      requests.push({ grant, clientId, at, ok: true, ...(tenant !== undefined ? { tenant } : {}) });
      sendJson(res, 200, answer);
    } catch (e) {
      const err = e instanceof OAuthError ? e : new OAuthError(500, 'server_error', String(e));
      requests.push({ grant, clientId, at, ok: false, error: err.code, ...(tenant !== undefined ? { tenant } : {}) });
      sendJson(res, err.status, { error: err.code, error_description: err.description }, err.headers);
    }
  }

  function basicId(req: IncomingMessage): string | undefined {
    const authz = req.headers.authorization;
    if (!authz || !/^basic /i.test(authz)) return undefined;
    const decoded = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon < 0 ? undefined : formDecode(decoded.slice(0, colon));
  }

  const http = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(e) });
      else res.destroy();
    });
  });
  http.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', () => {
      http.off('error', reject);
      resolve();
    });
  });
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;

  const findDevice = (code: string): DeviceCodeRecord => {
    const rec = deviceCodes.find((d) => d.userCode === code);
    if (!rec) throw new Error(`oauth test server: no device code with user code ${code}`);
    return rec;
  };

  const server: OAuthServer = {
    url,
    tokenUrl: `${url}/token`,
    deviceCodeUrl: `${url}/devicecode`,
    requests,
    issued,
    refreshTokens,
    deviceCodes,
    validate(accessToken) {
      const t = accessByToken.get(accessToken);
      if (!t || expiredByHand.has(accessToken) || Date.now() >= t.expiresAt) return undefined;
      return t;
    },
    revoke(refreshToken) {
      const rec = refreshByToken.get(refreshToken);
      if (rec) rec.valid = false;
    },
    setRefreshToken(t, user) {
      addRefresh(t, user, null, defaultScope);
    },
    approveDevice(code, user) {
      const rec = findDevice(code);
      if (rec.state !== 'pending') throw new Error(`oauth test server: device code ${code} is ${rec.state}, not pending`);
      rec.state = 'approved';
      rec.user = user;
    },
    denyDevice(code) {
      const rec = findDevice(code);
      if (rec.state !== 'pending') throw new Error(`oauth test server: device code ${code} is ${rec.state}, not pending`);
      rec.state = 'denied';
    },
    nextDeviceCode(timeoutMs = DEFAULT_WAIT_MS) {
      if (deviceConsumed < deviceCodes.length && deviceWaiters.length === 0) return Promise.resolve(deviceCodes[deviceConsumed++]!);
      if (closed) return Promise.reject(new Error('oauth test server is closed'));
      return new Promise<DeviceCodeRecord>((resolve, reject) => {
        const w = {
          resolve,
          reject,
          timer: setTimeout(() => {
            const i = deviceWaiters.indexOf(w);
            if (i >= 0) deviceWaiters.splice(i, 1);
            reject(new Error(`oauth test server: no device code requested within ${timeoutMs} ms`));
          }, timeoutMs),
        };
        deviceWaiters.push(w);
      });
    },
    expire(accessToken) {
      if (accessToken !== undefined) expiredByHand.add(accessToken);
      else for (const t of issued) expiredByHand.add(t.accessToken);
    },
    hold(count = Number.POSITIVE_INFINITY) {
      const gate: Gate = { remaining: count, waiting: [] };
      gates.push(gate);
      return () => releaseGate(gate);
    },
    waitForHeld(count, timeoutMs = DEFAULT_WAIT_MS) {
      if (heldCount() >= count) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          const i = heldWaiters.indexOf(w);
          if (i >= 0) heldWaiters.splice(i, 1);
          reject(new Error(`oauth test server: ${heldCount()} of ${count} token requests held after ${timeoutMs} ms`));
        }, timeoutMs);
        const w = {
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        heldWaiters.push(w);
      });
    },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      for (const w of deviceWaiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new Error('oauth test server closed while waiting for a device code'));
      }
      for (const g of [...gates]) releaseGate(g);
      return new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      });
    },
  };
  return server;
}
