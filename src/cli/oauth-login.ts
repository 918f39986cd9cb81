/**
 * `sendas oauth login`: signs a delegated (grant refresh_token) XOAUTH2 account in once, with the
 * device code flow (RFC 8628) or a browser on this machine (authorization code + PKCE, RFC 7636,
 * loopback redirect, RFC 8252), and stores the refresh token in the state directory (0600) where
 * the relay's TokenProvider picks it up at its next token request. The account is resolved exactly
 * as the relay resolves it. Never prints a secret or a token.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { serverOf, type ConfigSnapshot, type IdentityConfig, type OAuthConfig, type ServerConfig } from '../config/types.js';
import { RelayError, oneLine } from '../errors/relay-error.js';
import { accountFor, hasOwnAccount, serverAccount, type Account } from '../config/account.js';
import { saveLoginRefreshToken } from '../oauth/tokens.js';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
/** Each request to the authorization server; someone is waiting at a terminal. */
const REQUEST_TIMEOUT_MS = 15_000;
/** How long the browser flow waits for the browser to come back (--open-timeout). */
const DEFAULT_OPEN_TIMEOUT_S = 300;
/** Network errors in a row while polling before giving up. */
const MAX_POLL_NETWORK_ERRORS = 3;

/** The options as parsed by main.ts, unchecked. */
export interface OAuthArgs {
  readonly account: string | undefined;
  readonly flow: string | undefined;
  readonly openTimeout: string | undefined;
  readonly deviceUrl: string | undefined;
  readonly authorizeUrl: string | undefined;
}

interface Output {
  write(text: string): unknown;
}

export interface OAuthLoginDeps {
  readonly fetch?: typeof fetch;
}

/**
 * `sendas oauth SUB …`. Exit codes: 0 signed in and stored, 1 the sign-in failed (declined,
 * expired, refused, unreachable, cannot store) or the configuration is invalid, 2 usage error,
 * unknown account, or an account that needs no login.
 */
export async function oauthCommand(
  positionals: readonly string[],
  args: OAuthArgs,
  loadSnapshot: () => ConfigSnapshot | undefined | Promise<ConfigSnapshot | undefined>,
  out: Output,
  err: Output,
  deps: OAuthLoginDeps = {},
): Promise<number> {
  const usage = (text: string): number => {
    err.write(`sendas oauth login: ${text}\n`);
    return 2;
  };
  if (positionals[0] !== 'login' || positionals.length > 1) {
    err.write(`sendas oauth: ${positionals[0] === undefined ? 'missing' : `unknown: ${positionals.join(' ')};`} use \`sendas oauth login --config FILE --account NAME [--flow device|browser]\`\n`);
    return 2;
  }
  if (args.account === undefined || args.account === '') return usage('pass --account NAME (a channel, agent or server name)');
  const flow = args.flow ?? 'device';
  if (flow !== 'device' && flow !== 'browser') return usage(`--flow must be device or browser, not "${args.flow}"`);
  let openTimeoutS: number | undefined;
  if (args.openTimeout !== undefined) {
    if (!/^[0-9]+$/.test(args.openTimeout) || Number(args.openTimeout) < 1) return usage(`--open-timeout must be a number of seconds (at least 1), not "${args.openTimeout}"`);
    openTimeoutS = Number(args.openTimeout);
  }
  for (const [flag, value] of [['--device-url', args.deviceUrl], ['--authorize-url', args.authorizeUrl]] as const) {
    if (value !== undefined && !isHttpUrl(value)) return usage(`${flag} must be an http(s) URL, not "${value}"`);
  }
  if (flow === 'browser' && args.deviceUrl !== undefined) return usage('--device-url is for --flow device');
  if (flow === 'device' && args.authorizeUrl !== undefined) return usage('--authorize-url is for --flow browser');

  const snapshot = await loadSnapshot();
  if (!snapshot) return 1;
  const target = resolveLoginAccount(snapshot, args.account);
  if (!target.ok) return usage(target.message);
  const { account, who } = target;
  const oauth = account.oauth!;
  const ms = isMicrosoft(oauth.tokenUrl);
  let scope = oauth.scope;
  const line = (text: string) => out.write(`${text}\n`);
  if (ms && !/(^|\s)offline_access(\s|$)/.test(scope ?? '')) {
    scope = `${scope ?? ''} offline_access`.trim();
    line(`note: added offline_access to the scope (${account.server.path}.oauth.scope): Microsoft gives no refresh token without it`);
  }

  let endpoint: string | undefined;
  if (flow === 'device') {
    endpoint = args.deviceUrl ?? deviceEndpoint(oauth.tokenUrl);
    if (!endpoint) return usage(`cannot derive the device authorization endpoint from the token URL ${oauth.tokenUrl}: pass --device-url URL`);
  } else {
    endpoint = args.authorizeUrl ?? authorizeEndpoint(oauth.tokenUrl);
    if (!endpoint) return usage(`cannot derive the authorization endpoint from the token URL ${oauth.tokenUrl}: pass --authorize-url URL`);
  }

  const login = new Login(snapshot, account, oauth, scope, who, out, deps.fetch ?? fetch);
  line(`signing in ${who}, server ${account.server.name}, OAuth client ${oauth.clientId}`);
  return flow === 'device' ? login.device(endpoint, openTimeoutS) : login.browser(endpoint, openTimeoutS ?? DEFAULT_OPEN_TIMEOUT_S);
}

type LoginTarget = { readonly ok: true; readonly account: Account; readonly who: string } | { readonly ok: false; readonly message: string };

/**
 * The account for NAME: a channel, agent or server name (`server:NAME`, `channel:NAME`,
 * `agent:NAME` when a server and an identity share it), or a key path such as `agents[1]` or
 * `servers[0]` (what the relay's "run sendas oauth login" hint names). Resolved with the relay's
 * own accountFor/serverAccount, then checked to be an xoauth2 account with grant refresh_token.
 */
export function resolveLoginAccount(snapshot: ConfigSnapshot, name: string): LoginTarget {
  let server: ServerConfig | undefined;
  let identity: IdentityConfig | undefined;
  const prefixed = /^(server|channel|agent):(.+)$/.exec(name);
  const path = /^(servers|channels|agents)\[(\d+)\]$/.exec(name);
  if (prefixed) {
    const [, kind, rest] = prefixed as unknown as [string, string, string];
    if (kind === 'server') server = snapshot.serversByName.get(rest);
    else identity = snapshot.identitiesByName.get(rest);
    if (identity && identity.kind !== kind) identity = undefined;
  } else if (path) {
    if (path[1] === 'servers') server = snapshot.servers[Number(path[2])];
    else identity = snapshot.identities.find((i) => i.path === name);
  } else {
    server = snapshot.serversByName.get(name);
    identity = snapshot.identitiesByName.get(name);
    if (server && identity) {
      return { ok: false, message: `"${name}" is both a server and ${article(identity.kind)} ${identity.kind}: use --account server:${name} or --account ${identity.kind}:${name}` };
    }
  }
  if (!server && !identity) {
    const list = (kind: string, names: readonly string[]) => `${kind}: ${names.length > 0 ? names.join(', ') : '(none)'}`;
    return {
      ok: false,
      message:
        `unknown account "${name}": not a channel, agent or server of ${snapshot.file}; ` +
        [
          list('channels', snapshot.identities.filter((i) => i.kind === 'channel').map((i) => i.name)),
          list('agents', snapshot.identities.filter((i) => i.kind === 'agent').map((i) => i.name)),
          list('servers', snapshot.servers.map((s) => s.name)),
        ].join('; '),
    };
  }

  let who: string;
  let account: Account;
  if (identity) {
    const resolved = accountFor(snapshot, identity);
    const label = `${identity.kind} ${identity.name} (${identity.address})`;
    if (resolved instanceof RelayError) {
      // accountFor refuses only an override that signs in with a password and has none
      const method = identity.override?.auth ?? serverOf(snapshot, identity).auth;
      return { ok: false, message: `${label} signs in with a password (auth ${method}), not xoauth2: no OAuth login is needed (its password goes at ${identity.path}.override.password)` };
    }
    account = resolved;
    who =
      account.via === 'override'
        ? `${label} with its own account ${account.username ?? account.address}`
        : `${label}, which sends with server ${account.server.name}'s own account ${account.username ?? account.address}`;
  } else {
    if (!hasOwnAccount(server!)) {
      return { ok: false, message: `server ${server!.name} has no account of its own (every identity on it signs in with its own): sign in a channel or agent on it with --account NAME` };
    }
    account = serverAccount(server!);
    who = `server ${server!.name}'s own account ${account.username ?? account.address}`;
  }

  const { server: srv } = account;
  if (account.method !== 'xoauth2') {
    const where = account.via === 'override' ? `${account.passwordPath.replace(/\.password$/, '.auth')} / ${srv.path}.auth` : `${srv.path}.auth`;
    const how = account.method === 'none' ? 'signs in with nothing (auth none)' : `signs in with a password (auth ${account.method})`;
    return { ok: false, message: `${who} ${how}, not xoauth2: no OAuth login is needed (set auth: xoauth2 at ${where} to use OAuth)` };
  }
  if (!account.oauth) return { ok: false, message: `${who} uses auth xoauth2 but server ${srv.name} has no \`oauth:\` settings (${srv.path}.oauth)` };
  if (account.oauth.grant !== 'refresh_token') {
    return {
      ok: false,
      message:
        `${who} uses server ${srv.name}'s OAuth app with grant client_credentials: the relay gets app tokens with the app's client secret ` +
        `(${srv.path}.oauth.client_secret), so no one signs in and there is no refresh token to store; no login is needed`,
    };
  }
  return { ok: true, account, who };
}

/** RFC 8628 device authorization endpoint for a token URL (Microsoft, Google, else …/devicecode). */
export function deviceEndpoint(tokenUrl: string): string | undefined {
  const u = parseUrl(tokenUrl);
  if (!u) return undefined;
  if (isGoogle(u)) return 'https://oauth2.googleapis.com/device/code';
  // Microsoft: …/{tenant}/oauth2/v2.0/token → …/{tenant}/oauth2/v2.0/devicecode; others the same way
  if (!/\/token$/.test(u.pathname)) return undefined;
  u.pathname = u.pathname.replace(/\/token$/, '/devicecode');
  return u.href;
}

/** Authorization endpoint for a token URL: Microsoft and Google only (else --authorize-url). */
export function authorizeEndpoint(tokenUrl: string): string | undefined {
  const u = parseUrl(tokenUrl);
  if (!u) return undefined;
  if (isGoogle(u)) return 'https://accounts.google.com/o/oauth2/v2/auth';
  if (!MS_TOKEN_PATH.test(u.pathname)) return undefined;
  u.pathname = u.pathname.replace(/\/token$/, '/authorize');
  return u.href;
}

const MS_TOKEN_PATH = /\/oauth2\/v2\.0\/token$/;

function isMicrosoft(tokenUrl: string): boolean {
  const u = parseUrl(tokenUrl);
  return u !== undefined && (MS_TOKEN_PATH.test(u.pathname) || u.hostname === 'login.microsoftonline.com');
}

function isGoogle(u: URL): boolean {
  return u.hostname === 'oauth2.googleapis.com' || u.hostname === 'accounts.google.com' || u.hostname === 'www.googleapis.com';
}

function parseUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

function isHttpUrl(text: string): boolean {
  const u = parseUrl(text);
  return u !== undefined && (u.protocol === 'http:' || u.protocol === 'https:');
}

type PostResult = { readonly status: number; readonly json: Record<string, unknown> } | { readonly networkError: string };

/** One sign-in: the account, its OAuth client and where to write. */
class Login {
  /** Values never to print, even inside an error description from the server. */
  private readonly secrets: string[] = [];
  private readonly clientSecret: string | undefined;

  constructor(
    private readonly snapshot: ConfigSnapshot,
    private readonly account: Account,
    private readonly oauth: OAuthConfig,
    private readonly scope: string | undefined,
    private readonly who: string,
    private readonly out: Output,
    private readonly fetchFn: typeof fetch,
  ) {
    this.clientSecret = oauth.clientSecret?.reveal();
    if (this.clientSecret) this.secrets.push(this.clientSecret);
  }

  private line(text: string): void {
    this.out.write(`${this.redact(text)}\n`);
  }

  private redact(text: string): string {
    return this.secrets.reduce((t, s) => (s.length >= 4 ? t.split(s).join('[redacted]') : t), text);
  }

  private fail(reason: string, fix?: string): number {
    this.line(`FAILED: ${reason}`);
    if (fix) this.line(`fix: ${fix}`);
    return 1;
  }

  private get loginName(): string {
    return this.account.username ?? this.account.address;
  }

  // ---- device code flow (RFC 8628) ------------------------------------------------------------

  async device(deviceUrl: string, openTimeoutS: number | undefined): Promise<number> {
    const started = Date.now();
    const params: Record<string, string> = { client_id: this.oauth.clientId };
    if (this.scope) params.scope = this.scope;
    const r = await this.post(deviceUrl, params);
    if ('networkError' in r) return this.fail(`cannot reach the device authorization endpoint ${deviceUrl} (${r.networkError})`, 'check the network, proxies and the token URL; or pass --device-url URL');
    const { status, json } = r;
    const deviceCode = str(json.device_code);
    const userCode = str(json.user_code);
    const verification = str(json.verification_uri) ?? str(json.verification_url);
    if (status !== 200 || !deviceCode || !userCode || !verification) {
      const code = str(json.error);
      return this.fail(
        `the device authorization endpoint ${deviceUrl} refused: ${this.describe(status, json)}`,
        status === 404 || status === 405
          ? `${deviceUrl} is no device authorization endpoint: pass --device-url URL, or use --flow browser`
          : code === 'invalid_scope' && isGoogle(new URL(deviceUrl))
            ? `Google's device flow does not allow the scope "${this.scope ?? ''}" (Gmail): use --flow browser with a "Desktop app" client`
            : this.fixFor(code, 'device'),
      );
    }
    this.secrets.push(deviceCode);
    const expiresIn = positive(json.expires_in) ?? 900;
    let interval = positive(json.interval) ?? 5;
    const codeDeadline = started + expiresIn * 1000;
    const deadline = openTimeoutS === undefined ? codeDeadline : Math.min(codeDeadline, started + openTimeoutS * 1000);

    this.line(`To sign in, open ${verification} and enter the code ${userCode}`);
    const complete = str(json.verification_uri_complete);
    if (complete) this.line(`(or open ${complete}, which has the code in it)`);
    this.line(`Sign in as ${this.loginName}. Waiting up to ${duration((deadline - started) / 1000)} for the sign-in…`);

    const poll: Record<string, string> = { grant_type: DEVICE_GRANT, device_code: deviceCode, client_id: this.oauth.clientId };
    if (this.clientSecret) poll.client_secret = this.clientSecret;
    let networkErrors = 0;
    for (;;) {
      const wait = Math.min(interval * 1000, Math.max(0, deadline - Date.now()));
      await sleep(wait);
      if (Date.now() >= deadline) {
        return deadline < codeDeadline
          ? this.fail(`no sign-in within ${openTimeoutS} s (--open-timeout); the code ${userCode} is no longer waited for`, 'run the command again, and complete the sign-in in time')
          : this.fail(`the code ${userCode} expired before the sign-in was completed (expired_token, after ${duration(expiresIn)})`, `run the command again and complete the sign-in within ${duration(expiresIn)}`);
      }
      const p = await this.post(this.oauth.tokenUrl, poll);
      if ('networkError' in p) {
        networkErrors++;
        if (networkErrors >= MAX_POLL_NETWORK_ERRORS) {
          return this.fail(`cannot reach the token endpoint ${this.oauth.tokenUrl} (${p.networkError}, ${networkErrors} times in a row)`, 'check the network and proxies, then run the command again');
        }
        continue;
      }
      networkErrors = 0;
      const error = str(p.json.error);
      if (p.status === 200 && !error) return this.received(p.json);
      switch (error) {
        case 'authorization_pending':
          continue;
        case 'slow_down':
          interval += 5; // RFC 8628 §3.5
          continue;
        case 'access_denied':
          return this.fail(`the sign-in was declined (access_denied): ${this.describe(p.status, p.json)}`, `run the command again and accept the request as ${this.loginName}`);
        case 'expired_token':
          return this.fail(`the code ${userCode} expired before the sign-in was completed (expired_token)`, `run the command again and complete the sign-in within ${duration(expiresIn)}`);
        default:
          return this.fail(`the token endpoint ${this.oauth.tokenUrl} refused: ${this.describe(p.status, p.json)}`, this.fixFor(error, 'device'));
      }
    }
  }

  // ---- browser flow: authorization code + PKCE, loopback redirect ------------------------------

  async browser(authorizeUrl: string, openTimeoutS: number): Promise<number> {
    const verifier = randomBytes(32).toString('base64url');
    const challenge = createHash('sha256').update(verifier).digest('base64url');
    const state = randomBytes(16).toString('base64url');
    this.secrets.push(verifier);

    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const port = (server.address() as AddressInfo).port;
    const redirectUri = `http://127.0.0.1:${port}/callback`;
    try {
      const url = new URL(authorizeUrl);
      const q = url.searchParams;
      q.set('client_id', this.oauth.clientId);
      q.set('response_type', 'code');
      q.set('redirect_uri', redirectUri);
      if (this.scope) q.set('scope', this.scope);
      q.set('state', state);
      q.set('code_challenge', challenge);
      q.set('code_challenge_method', 'S256');
      if (isGoogle(url)) {
        // without these Google issues no refresh token (or none on a second consent)
        q.set('access_type', 'offline');
        q.set('prompt', 'consent');
      }
      q.set('login_hint', this.loginName);

      this.line(`Open this URL in a browser on this machine and sign in as ${this.loginName}:`);
      this.line(`  ${url.href}`);
      this.line(`(the browser returns to ${redirectUri}; from another machine, forward the port first: ssh -L ${port}:127.0.0.1:${port} …)`);
      this.line(`Waiting up to ${duration(openTimeoutS)} for the browser…`);

      const callback = await this.waitForCallback(server, state, openTimeoutS);
      if (!callback) return this.fail(`no sign-in came back to ${redirectUri} within ${duration(openTimeoutS)} (--open-timeout)`, 'run the command again, open the URL on this machine and complete the sign-in in time');
      const { params, res } = callback;
      const error = params.get('error');
      const code = params.get('code');
      if (error || !code) {
        const description = params.get('error_description');
        const reason = error ? `${error}${description ? `: ${oneLine(description).slice(0, 300)}` : ''}` : 'no code in the redirect';
        await page(res, 400, 'Sign-in failed', `${reason}. See the terminal.`);
        return error === 'access_denied'
          ? this.fail(`the sign-in was declined in the browser (${this.redact(reason)})`, `run the command again and accept the request as ${this.loginName}`)
          : this.fail(`the authorization server redirected back without a code (${this.redact(reason)})`, this.fixFor(error ?? undefined, 'browser'));
      }
      this.secrets.push(code);
      const body: Record<string, string> = {
        grant_type: 'authorization_code',
        code,
        redirect_uri: redirectUri,
        client_id: this.oauth.clientId,
        code_verifier: verifier,
      };
      if (this.clientSecret) body.client_secret = this.clientSecret;
      const r = await this.post(this.oauth.tokenUrl, body);
      if ('networkError' in r || r.status !== 200 || str(r.json.error)) {
        await page(res, 502, 'Sign-in failed', 'The sign-in worked, but sendas could not exchange it for a token. See the terminal.');
        if ('networkError' in r) return this.fail(`cannot reach the token endpoint ${this.oauth.tokenUrl} (${r.networkError})`, 'check the network and proxies, then run the command again');
        const e = str(r.json.error);
        return this.fail(
          `the token endpoint ${this.oauth.tokenUrl} refused the authorization code: ${this.describe(r.status, r.json)}`,
          e === 'unsupported_grant_type' ? 'this authorization server does not take authorization codes: use --flow device' : this.fixFor(e, 'browser'),
        );
      }
      const exit = await this.received(r.json);
      await page(res, exit === 0 ? 200 : 500, exit === 0 ? 'Signed in' : 'Sign-in failed', exit === 0 ? `sendas stored the sign-in of ${this.loginName}. You can close this tab.` : 'See the terminal.');
      return exit;
    } finally {
      server.close();
      server.closeAllConnections();
    }
  }

  /** The first /callback request that carries our `state`; others are answered and ignored. */
  private waitForCallback(server: ReturnType<typeof createServer>, state: string, timeoutS: number): Promise<{ params: URLSearchParams; res: ServerResponse } | undefined> {
    return new Promise((resolve) => {
      let done = false;
      const timer = setTimeout(() => {
        done = true;
        resolve(undefined);
      }, timeoutS * 1000);
      server.on('request', (req, res) => {
        const u = new URL(req.url ?? '/', 'http://127.0.0.1');
        if (req.method !== 'GET' || u.pathname !== '/callback') {
          void page(res, 404, 'Not found', 'This is sendas waiting for a sign-in; nothing here.');
          return;
        }
        if (u.searchParams.get('state') !== state) {
          void page(res, 400, 'Not this sign-in', 'This response does not belong to the sign-in sendas is waiting for. Open the URL sendas printed.');
          return;
        }
        if (done) {
          void page(res, 409, 'Already done', 'sendas has already handled this sign-in. See the terminal.');
          return;
        }
        done = true;
        clearTimeout(timer);
        resolve({ params: u.searchParams, res });
      });
    });
  }

  // ---- shared -----------------------------------------------------------------------------------

  /** A successful token response: store its refresh token (the access token is dropped). */
  private async received(json: Record<string, unknown>): Promise<number> {
    const refreshToken = str(json.refresh_token);
    if (!refreshToken) {
      return this.fail(
        'signed in, but the authorization server returned no refresh token',
        isMicrosoft(this.oauth.tokenUrl) ? 'add offline_access to the scope' : 'the client must be allowed offline access (Google: --flow browser asks for it)',
      );
    }
    this.secrets.push(refreshToken);
    const accessToken = str(json.access_token);
    if (accessToken) this.secrets.push(accessToken);
    let file: string;
    try {
      file = await saveLoginRefreshToken(this.snapshot.stateDir, this.account, refreshToken, undefined, this.snapshot.secretKey);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      return this.fail(
        `signed in, but cannot write the refresh token into the state directory ${this.snapshot.stateDir} (${code})`,
        'run the command as the user the relay runs as, or set state_dir (or $SENDAS_STATE_DIR) to a writable directory',
      );
    }
    this.line(`OK: signed in; the refresh token for ${this.who} (account ${this.account.key}) is stored in ${file} (mode 0600)`);
    const configured = this.account.oauth?.refreshToken !== undefined;
    this.line(
      `the relay uses it from its next token request, no restart or reload needed${configured ? `; it takes precedence over ${this.account.oauthPath} until that setting changes` : ''}`,
    );
    if (typeof process.getuid === 'function' && process.getuid() === 0) {
      this.line(`note: written as root: if the relay runs as another user, give that user the file (chown)`);
    }
    return 0;
  }

  private async post(url: string, params: Record<string, string>): Promise<PostResult> {
    let response: Response;
    try {
      response = await this.fetchFn(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams(params),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (e) {
      const name = (e as Error).name;
      const cause = (e as { cause?: { code?: string } }).cause?.code;
      return { networkError: name === 'TimeoutError' ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : (cause ?? name) };
    }
    let json: Record<string, unknown> = {};
    try {
      const parsed: unknown = await response.json();
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) json = parsed as Record<string, unknown>;
    } catch {
      // not JSON: described by its status
    }
    return { status: response.status, json };
  }

  /** "error: description" from an OAuth error answer, one line, redacted, bounded. */
  private describe(status: number, json: Record<string, unknown>): string {
    const code = str(json.error) ?? `HTTP ${status}`;
    const description = str(json.error_description);
    return this.redact(`${code}${description ? ` (${oneLine(description).slice(0, 300)})` : ''}`);
  }

  private fixFor(error: string | undefined, flow: 'device' | 'browser'): string {
    const { server } = this.account;
    switch (error) {
      case 'invalid_client':
        return `check ${server.path}.oauth.client_id (${this.oauth.clientId}) and ${server.path}.oauth.client_secret${this.clientSecret ? ' (wrong or expired?)' : ' (none is configured: a confidential client needs one)'}`;
      case 'unauthorized_client':
        return flow === 'device'
          ? `client ${this.oauth.clientId} may not use the device flow: Microsoft: enable "Allow public client flows" in the app registration; Google: use a "TVs and Limited Input devices" client, or --flow browser`
          : `client ${this.oauth.clientId} may not use the authorization code flow: register the redirect URI http://127.0.0.1 (Microsoft: "Mobile and desktop applications"; Google: a "Desktop app" client)`;
      case 'invalid_scope':
        return `the scope "${this.scope ?? ''}" (${server.path}.oauth.scope) is not valid for client ${this.oauth.clientId}`;
      case 'invalid_request':
        return `see the description; for the browser flow the redirect URI http://127.0.0.1 must be registered for client ${this.oauth.clientId}`;
      default:
        return 'see the description from the authorization server';
    }
  }
}

/** Answers the browser with a short HTML page and ends the connection. */
function page(res: ServerResponse, status: number, title: string, text: string): Promise<void> {
  const html = `<!doctype html><meta charset="utf-8"><title>sendas: ${escapeHtml(title)}</title><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p>\n`;
  return new Promise((resolve) => {
    // a browser that went away must not keep the command waiting
    res.once('close', () => resolve());
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', connection: 'close', 'content-length': Buffer.byteLength(html) });
    res.end(html, () => resolve());
  });
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function positive(v: unknown): number | undefined {
  const n = typeof v === 'string' ? Number(v) : v;
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? n : undefined;
}

function duration(seconds: number): string {
  const s = Math.round(seconds);
  return s >= 120 && s % 60 === 0 ? `${s / 60} min` : `${s} s`;
}

function article(kind: string): string {
  return kind === 'agent' ? 'an' : 'a';
}
