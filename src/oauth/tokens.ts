import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { OAuthConfig } from '../config/types.js';
import type { SecretKey } from '../config/secret-key.js';
import { isStoredToken, openToken, sealToken, type StoredToken } from './sealed-token.js';
import { RelayError, oneLine } from '../errors/relay-error.js';
import type { Account } from '../config/account.js';
import type { Logger } from '../log.js';
import type { SharedRefreshToken, SharedTokens } from '../cluster/tokens.js';

/** The only read of the real time in this module; everything else asks the clock it was given. */
const wallClock = (): number => Date.now();

export interface AccessToken {
  readonly token: string;
  /** Epoch ms. */
  readonly expiresAt: number;
  readonly obtainedAt: number;
}

export interface TokenProviderOptions {
  /** Where rotated refresh tokens are kept; read at each use so a reload can move it. */
  readonly stateDir: () => string;
  readonly logger: Logger;
  readonly fetch?: typeof fetch;
  /**
   * The clock (epoch ms) behind every expiry decision and timestamp here, so tests can move time
   * instead of waiting for a token to expire; the wall clock by default.
   */
  readonly now?: () => number;
  /** Refresh this long before expiry (default 60 s). */
  readonly marginMs?: number;
  /** How to tell ops to get a new refresh token, e.g. "sendas oauth login --config /etc/sendas/relay.yaml". */
  readonly loginHint?: string;
  /** The current snapshot's age key: rotated refresh tokens are encrypted to it (read at each use, like stateDir). */
  readonly secretKey?: () => SecretKey | undefined;
  /** `cluster:`: tokens shared with the other replicas (one refresh for all); without it, each relay on its own. */
  readonly shared?: SharedTokens;
}

/**
 * Access tokens for XOAUTH2 and Graph, per account: cached until shortly before they expire,
 * one refresh in flight per account (concurrent sends wait for it), and a forced refresh when the
 * upstream refused a cached token (nodemailer's retry after a 535).
 *
 * client_credentials (Microsoft 365 app-only): one app token per app and scope serves every
 * mailbox the app may send as. refresh_token (Gmail, delegated Microsoft 365): one per account;
 * a rotated refresh token is persisted in the state directory (0600), never in the YAML.
 *
 * With a shared store (`cluster:`), the cache and the single flight span the replicas
 * (cluster/tokens.ts), and a rotated refresh token is shared too; the state directory stays the
 * fallback while Redis is away.
 */
export class TokenProvider {
  private readonly cache = new Map<string, AccessToken>();
  private readonly inflight = new Map<string, Promise<AccessToken>>();
  private readonly fetch: typeof fetch;
  private readonly now: () => number;
  private readonly marginMs: number;

  constructor(private readonly opts: TokenProviderOptions) {
    this.fetch = opts.fetch ?? fetch;
    this.now = opts.now ?? wallClock;
    this.marginMs = opts.marginMs ?? 60_000;
  }

  /** The key a token is cached under: the app for client_credentials, the account for refresh tokens. */
  static cacheKey(account: Account): string {
    const o = requireOAuth(account);
    return o.grant === 'client_credentials' ? `app|${o.tokenUrl}|${o.clientId}|${o.scope ?? ''}` : `user|${o.tokenUrl}|${o.clientId}|${account.key}`;
  }

  /** A valid access token; `renew` forces a new one (the upstream refused the cached one). */
  async get(account: Account, renew = false): Promise<AccessToken> {
    const key = TokenProvider.cacheKey(account);
    const cached = this.cache.get(key);
    if (cached && !renew && cached.expiresAt - this.marginMs > this.now()) return cached;
    // connections that are refused at the same moment share one new token
    const running = this.inflight.get(key);
    if (running) return running;
    const request = this.obtain(account, key, renew ? (cached ?? 'unknown') : undefined)
      .then((token) => {
        this.cache.set(key, token);
        return token;
      })
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, request);
    return request;
  }

  /** nodemailer's provisionCallback for an account's XOAUTH2 sign-in. */
  provisioner(account: Account): (user: string, renew: boolean, cb: (err: Error | null, token?: string, expires?: number) => void) => void {
    return (_user, renew, cb) => {
      this.get(account, renew).then(
        (t) => cb(null, t.token, t.expiresAt),
        (err: Error) => cb(err),
      );
    };
  }

  /** Forgets cached tokens (a reload changed the OAuth settings). */
  clear(): void {
    this.cache.clear();
  }

  /**
   * A new token for the cache: from the token endpoint, or through the shared store, where one
   * replica's request serves all. After a refusal, another replica's token is taken only if it is
   * not the refused one and was obtained since (three replicas refused at once refresh once).
   */
  private obtain(account: Account, key: string, refused: AccessToken | 'unknown' | undefined): Promise<AccessToken> {
    const shared = this.opts.shared;
    if (!shared) return this.request(account, key);
    const fresh = (t: AccessToken) => t.expiresAt - this.marginMs > this.now();
    const accept = (t: AccessToken) => refused !== 'unknown' && fresh(t) && (refused === undefined || (t.token !== refused.token && t.obtainedAt >= refused.obtainedAt));
    return shared.flight(key, { accept, refresh: () => this.request(account, key), marginMs: this.marginMs });
  }

  private async request(account: Account, key: string): Promise<AccessToken> {
    const o = requireOAuth(account);
    const body = new URLSearchParams({ client_id: o.clientId });
    if (o.clientSecret) body.set('client_secret', o.clientSecret.reveal());
    if (o.scope) body.set('scope', o.scope);
    let stored: StoredRefreshToken | undefined;
    if (o.grant === 'client_credentials') {
      body.set('grant_type', 'client_credentials');
    } else {
      stored = await this.refreshToken(account, o, key);
      body.set('grant_type', 'refresh_token');
      body.set('refresh_token', stored.token);
    }

    const started = this.now();
    let response: Response;
    try {
      response = await this.fetch(o.tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body,
        signal: AbortSignal.timeout(15_000),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new RelayError('network', { code: 451, enhanced: '4.4.1' }, `Cannot reach the OAuth token endpoint ${o.tokenUrl} for account ${account.username ?? account.address} (${cause})`, { cause: err });
    }
    const json = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (!response.ok || typeof json.access_token !== 'string') {
      throw tokenError(account, o, response.status, json, this.opts.loginHint);
    }
    const expiresIn = Number(json.expires_in ?? 3600);
    const token: AccessToken = { token: json.access_token, expiresAt: started + expiresIn * 1000, obtainedAt: this.now() };
    // cached before the refresh token is kept: a state directory that refuses the write fails this call, the token still serves the next
    this.cache.set(key, token);
    if (o.grant === 'refresh_token' && typeof json.refresh_token === 'string' && json.refresh_token !== stored?.token) {
      await this.saveRefreshToken(account, o, key, json.refresh_token);
    }
    this.opts.logger.debug({ account: account.key, grant: o.grant, expiresIn }, 'OAuth access token obtained');
    return token;
  }

  /**
   * The refresh token to use: the newest of the shared one (another replica's rotation) and the
   * one in the state directory (rotated, or stored by `sendas oauth login`), unless ops put a
   * different one in the YAML since.
   */
  private async refreshToken(account: Account, o: OAuthConfig, key: string): Promise<StoredRefreshToken> {
    const configured = o.refreshToken?.reveal();
    const origin = configured ? digest(configured) : null;
    const file = this.stateFile(account);
    const [saved, sharedRt] = await Promise.all([readState(file), this.opts.shared?.readRefresh(key)]);
    const shared = sharedRt && (origin === null || sharedRt.origin === origin) ? sharedRt : undefined;
    const local = saved && (origin === null || saved.origin === origin) ? saved : undefined;
    const localAt = local ? Date.parse(local.updated_at) || 0 : -Infinity;
    if (shared && shared.updatedAt >= localAt) {
      // the fallback for when Redis is away: the newest token, not one rotated away since
      if (shared.updatedAt > localAt) await this.keepLocally(account, file, shared);
      return { token: shared.token, origin: shared.origin };
    }
    if (local) {
      const opened = await this.openStateFile(account, file, local);
      // newer here (a login on this replica, a rotation while Redis was away): the others get it too
      await this.opts.shared?.writeRefresh(key, { token: opened, origin: local.origin, updatedAt: localAt });
      return { token: opened, origin: local.origin };
    }
    if (configured) return { token: configured, origin };
    throw new RelayError(
      'auth',
      { code: 451, enhanced: '4.7.0' },
      `No OAuth refresh token for account ${account.username ?? account.address}: set ${account.oauthPath} or run \`${this.opts.loginHint ?? 'sendas oauth login --config FILE'} --account ${accountName(account)}\``,
      { fix: `run \`${this.opts.loginHint ?? 'sendas oauth login --config FILE'} --account ${accountName(account)}\` (or set ${account.oauthPath})` },
    );
  }

  private async openStateFile(account: Account, file: string, saved: StateFile): Promise<string> {
    const key = this.opts.secretKey?.();
    const opened = await openToken(saved.refresh_token, key);
    if ('problem' in opened) {
      const login = `${this.opts.loginHint ?? 'sendas oauth login --config FILE'} --account ${accountName(account)}`;
      throw new RelayError('auth', { code: 451, enhanced: '4.7.0' }, `The stored OAuth refresh token ${file} of account ${account.username ?? account.address} cannot be read: ${opened.problem}`, {
        fix: `configure the key it was encrypted to, or run \`${login}\``,
      });
    }
    // a file from before the key was configured: encrypted now rather than at the next rotation (which Gmail may never do)
    if (opened.plain && key) {
      try {
        await writeState(file, { ...saved, refresh_token: await sealToken(opened.token, key) });
        this.opts.logger.info({ account: account.key }, 'OAuth refresh token in the state directory encrypted to the secret key');
      } catch (err) {
        // the token still works; the file stays in clear until a write succeeds
        this.opts.logger.warn({ account: account.key, file, code: (err as NodeJS.ErrnoException).code }, 'cannot encrypt the OAuth refresh token in the state directory');
      }
    }
    return opened.token;
  }

  /** The shared refresh token, written to the state directory too; a failed write is said and the shared one still used. */
  private async keepLocally(account: Account, file: string, rt: SharedRefreshToken): Promise<void> {
    try {
      await writeState(file, { account: account.key, refresh_token: await sealToken(rt.token, this.opts.secretKey?.()), origin: rt.origin, updated_at: new Date(rt.updatedAt).toISOString() });
    } catch (err) {
      this.opts.logger.warn({ account: account.key, file, code: (err as NodeJS.ErrnoException).code }, 'cannot keep the shared OAuth refresh token in the state directory');
    }
  }

  private async saveRefreshToken(account: Account, o: OAuthConfig, key: string, token: string): Promise<void> {
    const configured = o.refreshToken?.reveal();
    const origin = configured ? digest(configured) : null;
    const updatedAt = this.now();
    // shared first: the other replicas must not refresh with the one rotated away
    await this.opts.shared?.writeRefresh(key, { token, origin, updatedAt });
    await writeState(this.stateFile(account), { account: account.key, refresh_token: await sealToken(token, this.opts.secretKey?.()), origin, updated_at: new Date(updatedAt).toISOString() });
    this.opts.logger.info({ account: account.key }, 'OAuth refresh token rotated; the new one is kept in the state directory');
  }

  stateFile(account: Account): string {
    return refreshTokenFile(this.opts.stateDir(), account);
  }
}

interface StoredRefreshToken {
  token: string;
  origin: string | null;
}

interface StateFile {
  account: string;
  /** In clear, or {age: …} when a key is configured (sealed-token.ts). */
  refresh_token: StoredToken;
  /** Digest of the YAML's refresh token this one descends from (null: from `sendas oauth login`). */
  origin: string | null;
  updated_at: string;
}

/**
 * Stores a refresh token obtained by `sendas oauth login`. It is marked as descending from the
 * YAML's current refresh token (if any), so it wins over it until ops put a different one there.
 */
export async function saveLoginRefreshToken(stateDir: string, account: Account, token: string, now: () => number = wallClock, key?: SecretKey): Promise<string> {
  const file = refreshTokenFile(stateDir, account);
  const configured = account.oauth?.refreshToken?.reveal();
  await writeState(file, { account: account.key, refresh_token: await sealToken(token, key), origin: configured ? digest(configured) : null, updated_at: new Date(now()).toISOString() });
  return file;
}

/** Where an account's refresh token is kept in the state directory. */
export function refreshTokenFile(stateDir: string, account: Account): string {
  const slug = account.key.replace(/[^A-Za-z0-9@._-]/g, '_');
  return join(stateDir, 'oauth', `${slug}.json`);
}

export async function writeState(file: string, state: StateFile): Promise<void> {
  await mkdir(join(file, '..'), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}

async function readState(file: string): Promise<StateFile | undefined> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as StateFile;
    return isStoredToken(s.refresh_token) ? s : undefined;
  } catch {
    return undefined;
  }
}

function digest(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

function requireOAuth(account: Account): OAuthConfig {
  if (!account.oauth) throw new RelayError('config', { code: 451, enhanced: '4.3.5' }, `server ${account.server.name} has no oauth settings`);
  return account.oauth;
}

function accountName(account: Account): string {
  return account.passwordPath.replace(/\.override\.password$|\.password$/, '');
}

/** Token endpoint refusals, classified with the fix (RFC 6749 §5.2 error codes). */
function tokenError(account: Account, o: OAuthConfig, status: number, json: Record<string, unknown>, loginHint: string | undefined): RelayError {
  const code = typeof json.error === 'string' ? json.error : `HTTP ${status}`;
  const description = typeof json.error_description === 'string' ? `: ${oneLine(json.error_description).slice(0, 300)}` : '';
  const who = account.username ?? account.address;
  const fix = tokenFix(code, account, o, loginHint);
  return new RelayError('auth', { code: 451, enhanced: '4.7.0' }, `OAuth token endpoint refused account ${who} (${code}${description}); ${fix}`, {
    upstreamReply: `${code}${description}`,
    fix,
  });
}

/** What ops do about a token endpoint's refusal, naming the key or the command. */
export function tokenFix(code: string, account: Account, o: OAuthConfig, loginHint: string | undefined): string {
  const oauth = `${account.server.path}.oauth`;
  switch (code) {
    case 'invalid_client':
    case 'unauthorized_client':
      // Microsoft AADSTS7000215 (invalid secret) / AADSTS7000222 (expired) both come as invalid_client
      return `client secret wrong or expired: ${oauth}.client_secret (create a new one for client ${o.clientId}, or check ${oauth}.client_id)`;
    case 'invalid_grant':
      return `the refresh token of ${account.username ?? account.address} expired or was revoked: run \`${loginHint ?? 'sendas oauth login --config FILE'} --account ${accountName(account)}\``;
    case 'invalid_scope':
      return `the scope "${o.scope ?? ''}" is not granted to client ${o.clientId}: check ${oauth}.scope and the app's API permissions (admin consent)`;
    case 'invalid_request':
      return `the token endpoint did not take the request: check ${oauth}.token_url and ${oauth}.tenant`;
    default:
      return `see the endpoint's description; check ${oauth}`;
  }
}
