import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { accountFor, type Account } from '../../src/config/account.js';
import { silentLogger } from '../../src/log.js';
import { TokenProvider, saveLoginRefreshToken, type TokenProviderOptions } from '../../src/oauth/tokens.js';

/** Expiry and refresh decisions, with a clock the test moves: no test here waits for time to pass. */

const yaml = (grant: string) => `
servers:
  - name: m365
    host: smtp.contoso.example
    auth: xoauth2
    username: relay@contoso.example
    oauth:
      client_id: app
      client_secret: app-secret
      grant: ${grant}
      token_url: https://login.contoso.example/token
      scope: https://outlook.office365.com/.default
channels:
  - name: support
    address: support@contoso.example
agents:
  - name: alice
    address: alice@contoso.example
    override:
      oauth: {refresh_token: rt-alice-1}
`;

const T0 = Date.UTC(2026, 10, 21, 12, 0, 0);
const SECOND = 1_000;

function accountOf(name: string, grant: 'client_credentials' | 'refresh_token' = 'client_credentials'): Account {
  const snapshot = parseConfig(yaml(grant), '/test/relay.yaml', { env: {} });
  const account = accountFor(snapshot, snapshot.identitiesByName.get(name));
  if (account instanceof Error) throw account;
  return account;
}

/** A token endpoint in the test: each answer is the next token, with the lifetime the test sets. */
function tokenEndpoint(clock: { now: number }, opts: { expiresIn?: number | undefined; takesMs?: number; refreshToken?: string } = {}) {
  const requests: URLSearchParams[] = [];
  const fetch = (async (_url: string | URL | Request, init?: RequestInit) => {
    requests.push(new URLSearchParams(String(init?.body)));
    const n = requests.length;
    // the answer comes later, as over a network: callers meanwhile see the request in flight
    await Promise.resolve();
    clock.now += opts.takesMs ?? 0;
    const body: Record<string, unknown> = { access_token: `token-${n}`, token_type: 'Bearer' };
    if (!('expiresIn' in opts) || opts.expiresIn !== undefined) body.expires_in = opts.expiresIn ?? 3600;
    if (opts.refreshToken) body.refresh_token = `${opts.refreshToken}-${n}`;
    return new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } });
  }) as typeof globalThis.fetch;
  return { fetch, requests };
}

describe('TokenProvider: expiry and refresh margin, on an injected clock', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const provider = (clock: { now: number }, fetch: typeof globalThis.fetch, extra: Partial<TokenProviderOptions> = {}) => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-tokens-'));
    dirs.push(dir);
    return new TokenProvider({ stateDir: () => dir, logger: silentLogger(), fetch, now: () => clock.now, ...extra });
  };

  it('keeps a token until the margin (60 s) before it expires, then asks for a new one', async () => {
    const clock = { now: T0 };
    const endpoint = tokenEndpoint(clock, { expiresIn: 3600 });
    const tokens = provider(clock, endpoint.fetch);
    const support = accountOf('support');
    const first = await tokens.get(support);
    expect(first).toEqual({ token: 'token-1', expiresAt: T0 + 3600 * SECOND, obtainedAt: T0 });

    clock.now = T0 + 3540 * SECOND - 1;
    expect((await tokens.get(support)).token).toBe('token-1');
    expect(endpoint.requests).toHaveLength(1);

    clock.now = T0 + 3540 * SECOND;
    expect(await tokens.get(support)).toEqual({ token: 'token-2', expiresAt: clock.now + 3600 * SECOND, obtainedAt: clock.now });
    expect(endpoint.requests).toHaveLength(2);
  });

  it('uses the margin it is given', async () => {
    const clock = { now: T0 };
    const endpoint = tokenEndpoint(clock, { expiresIn: 600 });
    const tokens = provider(clock, endpoint.fetch, { marginMs: 5 * 60 * SECOND });
    const support = accountOf('support');
    await tokens.get(support);
    clock.now = T0 + 300 * SECOND - 1;
    expect((await tokens.get(support)).token).toBe('token-1');
    clock.now = T0 + 300 * SECOND;
    expect((await tokens.get(support)).token).toBe('token-2');
  });

  it('counts the lifetime from when the request was sent, so a slow endpoint does not stretch it', async () => {
    const clock = { now: T0 };
    const endpoint = tokenEndpoint(clock, { expiresIn: 120, takesMs: 5 * SECOND });
    const tokens = provider(clock, endpoint.fetch);
    const token = await tokens.get(accountOf('support'));
    expect(token).toEqual({ token: 'token-1', expiresAt: T0 + 120 * SECOND, obtainedAt: T0 + 5 * SECOND });
  });

  it('a token that expires within the margin as it arrives is asked for again at its next use', async () => {
    const clock = { now: T0 };
    const endpoint = tokenEndpoint(clock, { expiresIn: 60 });
    const tokens = provider(clock, endpoint.fetch);
    const support = accountOf('support');
    expect((await tokens.get(support)).token).toBe('token-1');
    expect((await tokens.get(support)).token).toBe('token-2');
  });

  it('without expires_in a token is taken to last an hour', async () => {
    const clock = { now: T0 };
    const endpoint = tokenEndpoint(clock, { expiresIn: undefined });
    const tokens = provider(clock, endpoint.fetch);
    expect((await tokens.get(accountOf('support'))).expiresAt).toBe(T0 + 3600 * SECOND);
  });

  it('renew asks for a new token however long the cached one has left; concurrent callers share that request', async () => {
    const clock = { now: T0 };
    const endpoint = tokenEndpoint(clock);
    const tokens = provider(clock, endpoint.fetch);
    const support = accountOf('support');
    await tokens.get(support);
    const [a, b] = await Promise.all([tokens.get(support, true), tokens.get(support, true)]);
    expect([a.token, b.token]).toEqual(['token-2', 'token-2']);
    expect(endpoint.requests).toHaveLength(2);
  });

  it('a rotated refresh token is stored with the time of the clock', async () => {
    const clock = { now: T0 };
    const endpoint = tokenEndpoint(clock, { refreshToken: 'rt-alice-rotated' });
    const tokens = provider(clock, endpoint.fetch);
    const alice = accountOf('alice', 'refresh_token');
    await tokens.get(alice);
    expect(endpoint.requests[0]!.get('refresh_token')).toBe('rt-alice-1');
    const saved = JSON.parse(readFileSync(tokens.stateFile(alice), 'utf8')) as { refresh_token: string; updated_at: string };
    expect(saved).toMatchObject({ refresh_token: 'rt-alice-rotated-1', updated_at: new Date(T0).toISOString() });
  });

  it('`sendas oauth login` stores its refresh token with the time of the clock it is given', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-tokens-'));
    dirs.push(dir);
    const file = await saveLoginRefreshToken(dir, accountOf('alice', 'refresh_token'), 'rt-from-login', () => T0);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ refresh_token: 'rt-from-login', updated_at: new Date(T0).toISOString() });
  });
});
