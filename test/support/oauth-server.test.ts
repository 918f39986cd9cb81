import { afterEach, describe, expect, it } from 'vitest';
import { startOAuthServer, type OAuthServer, type OAuthServerOptions } from './oauth-server.js';

const APP = { clientId: 'app-1', clientSecret: 'app~secret.1+x' };
const DESKTOP = { clientId: 'desktop-1', clientSecret: 'desk-secret', publicClient: true };

const started: OAuthServer[] = [];
async function oauth(opts: Partial<OAuthServerOptions> = {}): Promise<OAuthServer> {
  const s = await startOAuthServer({ clients: [APP, DESKTOP], ...opts });
  started.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.close()));
});

interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}
async function post(url: string, form: Record<string, string>, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
    signal: AbortSignal.timeout(5_000),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
}
const basic = (id: string, secret: string): Record<string, string> => ({
  Authorization: 'Basic ' + Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64'),
});

describe('startOAuthServer', () => {
  it('client_credentials with the secret in the body: app token (user null), validate()', async () => {
    const s = await oauth({ accessTokenTtlSeconds: 1800 });
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(s.tokenUrl).toBe(`${s.url}/token`);
    const r = await post(s.tokenUrl, { grant_type: 'client_credentials', client_id: APP.clientId, client_secret: APP.clientSecret, scope: 'https://outlook.office365.com/.default' });
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.body).toEqual({ token_type: 'Bearer', scope: 'https://outlook.office365.com/.default', expires_in: 1800, access_token: expect.any(String) });
    const t = s.validate(r.body.access_token as string);
    expect(t).toMatchObject({ user: null, clientId: APP.clientId, scope: 'https://outlook.office365.com/.default' });
    expect(t!.expiresAt).toBeGreaterThan(Date.now() + 1790_000);
    expect(s.validate('nope')).toBeUndefined();
    expect(s.requests).toEqual([{ grant: 'client_credentials', clientId: APP.clientId, at: expect.any(Number), ok: true }]);
    expect(s.issued).toHaveLength(1);
  });

  it('client_credentials with HTTP Basic (form-url-encoded id:secret) and on the Microsoft tenant path', async () => {
    const s = await oauth();
    const r = await post(`${s.url}/contoso.onmicrosoft.com/oauth2/v2.0/token`, { grant_type: 'client_credentials' }, basic(APP.clientId, APP.clientSecret));
    expect(r.status).toBe(200);
    expect(r.body.scope).toBe('https://outlook.office365.com/.default');
    expect(s.requests[0]).toMatchObject({ grant: 'client_credentials', clientId: APP.clientId, ok: true, tenant: 'contoso.onmicrosoft.com' });
    // raw (not url-encoded) Basic credentials are accepted too
    const raw = { Authorization: 'Basic ' + Buffer.from(`${APP.clientId}:${APP.clientSecret}`).toString('base64') };
    expect((await post(s.tokenUrl, { grant_type: 'client_credentials' }, raw)).status).toBe(200);
  });

  it('invalid_client: wrong secret (401, WWW-Authenticate with Basic), unknown client, missing secret, two auth methods', async () => {
    const s = await oauth();
    const wrong = await post(s.tokenUrl, { grant_type: 'client_credentials', client_id: APP.clientId, client_secret: 'bad' });
    expect(wrong.status).toBe(401);
    expect(wrong.body).toEqual({ error: 'invalid_client', error_description: expect.stringMatching(/secret/i) });

    const wrongBasic = await post(s.tokenUrl, { grant_type: 'client_credentials' }, basic(APP.clientId, 'bad'));
    expect(wrongBasic.status).toBe(401);
    expect(wrongBasic.headers.get('www-authenticate')).toMatch(/^Basic/);

    const unknown = await post(s.tokenUrl, { grant_type: 'client_credentials', client_id: 'who', client_secret: 'x' });
    expect(unknown.status).toBe(401);
    expect(unknown.body.error).toBe('invalid_client');

    // a public client still needs its secret for client_credentials
    const noSecret = await post(s.tokenUrl, { grant_type: 'client_credentials', client_id: DESKTOP.clientId });
    expect(noSecret.status).toBe(401);
    expect(noSecret.body.error).toBe('invalid_client');

    const both = await post(s.tokenUrl, { grant_type: 'client_credentials', client_secret: APP.clientSecret }, basic(APP.clientId, APP.clientSecret));
    expect(both.status).toBe(400);
    expect(both.body.error).toBe('invalid_request');

    expect(s.requests.map((r) => [r.ok, r.error])).toEqual([
      [false, 'invalid_client'],
      [false, 'invalid_client'],
      [false, 'invalid_client'],
      [false, 'invalid_client'],
      [false, 'invalid_request'],
    ]);
    expect(s.issued).toHaveLength(0);
  });

  it('unsupported_grant_type, missing grant_type, wrong content type, GET', async () => {
    const s = await oauth();
    const pw = await post(s.tokenUrl, { grant_type: 'password', client_id: APP.clientId, client_secret: APP.clientSecret, username: 'u', password: 'p' });
    expect(pw.status).toBe(400);
    expect(pw.body.error).toBe('unsupported_grant_type');
    const none = await post(s.tokenUrl, { client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(none.body.error).toBe('invalid_request');
    const json = await fetch(s.tokenUrl, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"grant_type":"client_credentials"}' });
    expect(json.status).toBe(400);
    expect(((await json.json()) as { error: string }).error).toBe('invalid_request');
    const get = await fetch(s.tokenUrl);
    expect(get.status).toBe(405);
  });

  it('refresh_token grant: token for the refresh token user; unknown and revoked refresh tokens -> invalid_grant', async () => {
    const s = await oauth({ refreshTokens: { 'rt-alice': 'alice@a.example' } });
    const r = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'rt-alice', client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(r.status).toBe(200);
    expect(r.body.refresh_token).toBeUndefined(); // no rotation
    expect(s.validate(r.body.access_token as string)).toMatchObject({ user: 'alice@a.example', clientId: APP.clientId });

    const unknown = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'rt-nobody', client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(unknown.status).toBe(400);
    expect(unknown.body).toEqual({ error: 'invalid_grant', error_description: expect.stringMatching(/expired or revoked/) });

    s.revoke('rt-alice');
    const revoked = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'rt-alice', client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(revoked.status).toBe(400);
    expect(revoked.body.error).toBe('invalid_grant');

    s.setRefreshToken('rt-bob', 'bob@b.example');
    const bob = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'rt-bob' }, basic(APP.clientId, APP.clientSecret));
    expect(s.validate(bob.body.access_token as string)?.user).toBe('bob@b.example');

    // a confidential client must send its secret; a public one need not
    const noSecret = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'rt-bob', client_id: APP.clientId });
    expect(noSecret.body.error).toBe('invalid_client');
    const pub = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'rt-bob', client_id: DESKTOP.clientId });
    expect(pub.status).toBe(200);
  });

  it('rotateRefreshTokens: each refresh returns a new refresh token and invalidates the old one (bound to the client)', async () => {
    const s = await oauth({ rotateRefreshTokens: true, refreshTokens: { 'rt-0': 'alice@a.example' } });
    const one = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'rt-0', client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(one.status).toBe(200);
    const rt1 = one.body.refresh_token as string;
    expect(rt1).toMatch(/^rt_/);
    const reuse = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: 'rt-0', client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(reuse.body.error).toBe('invalid_grant');
    // the rotated token belongs to the client it was issued to
    const other = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: rt1, client_id: DESKTOP.clientId, client_secret: DESKTOP.clientSecret });
    expect(other.body.error).toBe('invalid_grant');
    const two = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: rt1, client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(two.status).toBe(200);
    expect(two.body.refresh_token).not.toBe(rt1);
    expect(s.refreshTokens.map((r) => [r.refreshToken === 'rt-0' ? 'rt-0' : 'new', r.valid, r.clientId])).toEqual([
      ['rt-0', false, null],
      ['new', false, APP.clientId],
      ['new', true, APP.clientId],
    ]);
  });

  it('expiry: accessTokenTtlSeconds 0 gives tokens validate() refuses; expire() ends a token early', async () => {
    const s0 = await oauth({ accessTokenTtlSeconds: 0 });
    const r0 = await post(s0.tokenUrl, { grant_type: 'client_credentials', client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(r0.body.expires_in).toBe(0);
    expect(s0.validate(r0.body.access_token as string)).toBeUndefined();

    const s = await oauth();
    const r = await post(s.tokenUrl, { grant_type: 'client_credentials', client_id: APP.clientId, client_secret: APP.clientSecret });
    const tok = r.body.access_token as string;
    expect(s.validate(tok)).toBeDefined();
    s.expire(tok);
    expect(s.validate(tok)).toBeUndefined();
  });

  it('device flow (RFC 8628): pending until approveDevice, then tokens incl. refresh_token; single redemption', async () => {
    const s = await oauth();
    const waiting = s.nextDeviceCode(5_000);
    const dc = await post(`${s.url}/common/oauth2/v2.0/devicecode`, { client_id: DESKTOP.clientId, scope: 'https://outlook.office.com/SMTP.Send offline_access' });
    expect(dc.status).toBe(200);
    expect(dc.body).toMatchObject({
      device_code: expect.any(String),
      user_code: expect.stringMatching(/^[A-Z]{4}-[A-Z]{4}$/),
      verification_uri: `${s.url}/device`,
      expires_in: 900,
      interval: 1,
    });
    const rec = await waiting;
    expect(rec.userCode).toBe(dc.body.user_code);
    expect((await fetch(`${s.url}/device`)).status).toBe(200);

    const poll = (): Promise<Answer> =>
      post(s.tokenUrl, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: dc.body.device_code as string, client_id: DESKTOP.clientId });
    const pending = await poll();
    expect(pending.status).toBe(400);
    expect(pending.body.error).toBe('authorization_pending');

    s.approveDevice(rec.userCode, 'alice@a.example');
    const done = await poll();
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ token_type: 'Bearer', scope: 'https://outlook.office.com/SMTP.Send offline_access', refresh_token: expect.any(String) });
    expect(s.validate(done.body.access_token as string)?.user).toBe('alice@a.example');
    expect((await poll()).body.error).toBe('invalid_grant');

    // the refresh token from the device flow works for the refresh_token grant
    const refreshed = await post(s.tokenUrl, { grant_type: 'refresh_token', refresh_token: done.body.refresh_token as string, client_id: DESKTOP.clientId });
    expect(s.validate(refreshed.body.access_token as string)?.user).toBe('alice@a.example');
    expect(s.requests.map((r) => r.error ?? 'ok')).toEqual(['authorization_pending', 'ok', 'invalid_grant', 'ok']);
  });

  it('device flow: denial -> access_denied, expiry -> expired_token, unknown client at the device endpoint -> invalid_client', async () => {
    const s = await oauth({ deviceCodeTtlSeconds: 0 });
    const dc = await post(s.deviceCodeUrl, { client_id: DESKTOP.clientId });
    const expired = await post(s.tokenUrl, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: dc.body.device_code as string, client_id: DESKTOP.clientId });
    expect(expired.body.error).toBe('expired_token');

    const s2 = await oauth();
    const dc2 = await post(s2.deviceCodeUrl, { client_id: DESKTOP.clientId });
    s2.denyDevice(dc2.body.user_code as string);
    const denied = await post(s2.tokenUrl, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: dc2.body.device_code as string, client_id: DESKTOP.clientId });
    expect(denied.body.error).toBe('access_denied');
    const unknown = await post(s2.deviceCodeUrl, { client_id: 'who' });
    expect(unknown.status).toBe(401);
    expect(unknown.body.error).toBe('invalid_client');
    expect(() => s2.approveDevice('NOPE-NOPE', 'x')).toThrow(/no device code/);
  });

  it('hold(): token requests hang until release(); with rotation only the first of two concurrent refreshes succeeds', async () => {
    const s = await oauth({ rotateRefreshTokens: true, refreshTokens: { 'rt-0': 'alice@a.example' } });
    const release = s.hold();
    const form = { grant_type: 'refresh_token', refresh_token: 'rt-0', client_id: APP.clientId, client_secret: APP.clientSecret };
    const a = post(s.tokenUrl, form);
    const b = post(s.tokenUrl, form);
    await s.waitForHeld(2, 5_000);
    expect(s.requests).toHaveLength(0);
    release();
    const answers = await Promise.all([a, b]);
    expect(answers.map((x) => x.status).sort()).toEqual([200, 400]);
    expect(s.requests.map((r) => r.ok).sort()).toEqual([false, true]);
    // released: later requests pass straight through
    const c = await post(s.tokenUrl, { grant_type: 'client_credentials', client_id: APP.clientId, client_secret: APP.clientSecret });
    expect(c.status).toBe(200);
  });

  it('hold(count) holds only the next count requests; waitForHeld times out; close() ends held requests', async () => {
    const s = await oauth();
    const form = { grant_type: 'client_credentials', client_id: APP.clientId, client_secret: APP.clientSecret };
    s.hold(1);
    const held = post(s.tokenUrl, form).then(
      () => 'answered',
      () => 'failed',
    );
    await s.waitForHeld(1, 5_000);
    expect((await post(s.tokenUrl, form)).status).toBe(200);
    await expect(s.waitForHeld(2, 100)).rejects.toThrow(/1 of 2/);
    await s.close();
    expect(await held).toBe('failed');
  });
});
