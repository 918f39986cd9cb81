import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startOAuthServer, type OAuthServer, type OAuthServerOptions } from '../support/oauth-server.js';
import { startTestUpstream } from '../support/upstream.js';
import { startGraphServer, type GraphServer } from '../support/graph-server.js';
import { startHttpConnectProxy, startSocksProxy, type TestProxy } from '../support/proxies.js';
import { swaks } from '../support/swaks.js';
import { headerValues, message, split, startRelay, type RunningRelay } from './harness.js';

const CLIENT = { clientId: 'sendas-app', clientSecret: 'app-secret-11' };

/** Modern sign-in: XOAUTH2 with tokens from a real (local) OAuth 2.0 endpoint, proxies, Graph. */
describe('OAuth 2.0, proxies and Microsoft Graph', () => {
  const closers: { close(): Promise<void> }[] = [];
  const relays: RunningRelay[] = [];
  afterEach(async () => {
    for (const r of relays.splice(0)) {
      const log = r.rawLog();
      await r.stop();
      for (const secret of ['app-secret-11', 'rt-alice-1']) expect(log).not.toContain(secret);
    }
    for (const c of closers.splice(0).reverse()) await c.close();
  });

  const oauth = async (opts: Partial<OAuthServerOptions> = {}) => {
    const o = await startOAuthServer({ clients: [CLIENT], ...opts });
    closers.push(o);
    return o;
  };
  /** An upstream that accepts a bearer token the OAuth server issued (app token: any mailbox; user token: its user). */
  const xoauthUpstream = async (o: OAuthServer, accept: (token: string, user: string) => boolean = () => true) => {
    const u = await startTestUpstream({
      xoauth2: (user, token) => {
        const t = o.validate(token);
        return Boolean(t && (t.user === null || t.user === user) && accept(token, user));
      },
    });
    closers.push(u);
    return u;
  };
  const yaml = (o: OAuthServer, port: number, extra: { grant?: string; server?: string; delivery?: string } = {}) => `
delivery: ${extra.delivery ?? 'passthrough'}
state_dir: ./state
servers:
  - name: m365
    host: 127.0.0.1
    port: ${port}
    security: none
    auth: xoauth2
    username: relay@contoso.example
    oauth:
      client_id: ${CLIENT.clientId}
      client_secret: ${CLIENT.clientSecret}
      grant: ${extra.grant ?? 'client_credentials'}
      token_url: ${o.tokenUrl}
      scope: https://outlook.office365.com/.default
${extra.server ?? ''}
channels:
  - name: support
    address: support@contoso.example
    override: {}
  - name: sales
    address: sales@contoso.example
    override: {}
agents:
  - name: alice
    address: alice@contoso.example
    override:
      oauth: {refresh_token: rt-alice-1}
`;
  const relay = async (text: string) => {
    const r = await startRelay(text);
    relays.push(r);
    return r;
  };
  const send = (r: RunningRelay, from: string, subject = 'hello', to: string | string[] = 'customer@example.net', extra: Record<string, string> = {}) =>
    swaks({ server: '127.0.0.1', port: r.port, from, to, data: message({ From: from, To: 'customer@example.net', Subject: subject, ...extra }) });

  it('client_credentials: one app token signs in every mailbox, and concurrent sends share one token request', async () => {
    const o = await oauth();
    const u = await xoauthUpstream(o);
    const r = await relay(yaml(o, u.port));
    const release = o.hold();
    const sends = Promise.all([send(r, 'support@contoso.example'), send(r, 'sales@contoso.example'), send(r, 'alice@contoso.example')]);
    await o.waitForHeld(1);
    release();
    expect((await sends).map((x) => x.finalCode)).toEqual([250, 250, 250]);
    expect(o.requests.map((q) => [q.grant, q.ok])).toEqual([['client_credentials', true]]);
    expect(u.xoauth2Attempts.filter((a) => a.ok).map((a) => a.username).sort()).toEqual(['alice@contoso.example', 'sales@contoso.example', 'support@contoso.example']);
  });

  it('refreshes an access token shortly before it expires', async () => {
    // expires_in 60 s is within sendas's 60 s margin from the moment it arrives, so the next sign-in
    // asks for a new one without the test waiting; the margin's edges are in test/unit/oauth-tokens.test.ts
    const o = await oauth({ accessTokenTtlSeconds: 60 });
    const u = await xoauthUpstream(o);
    const r = await relay(yaml(o, u.port, { server: '    max_recipients: 1\n' }));
    expect((await send(r, 'support@contoso.example', 'one')).finalCode).toBe(250);
    expect(o.requests).toHaveLength(1);
    expect((await send(r, 'sales@contoso.example', 'two')).finalCode).toBe(250);
    expect(o.requests).toHaveLength(2);
  });

  it('a 535 with a cached token triggers one refresh and one retry', async () => {
    const o = await oauth();
    const refused = new Set<string>();
    const u = await xoauthUpstream(o, (token) => !refused.has(token));
    const r = await relay(yaml(o, u.port));
    // prime the cache, then have the upstream stop accepting that token (revoked consent, say)
    expect((await send(r, 'support@contoso.example', 'first')).finalCode).toBe(250);
    refused.add(o.issued[0]!.accessToken);
    expect((await send(r, 'sales@contoso.example', 'second')).finalCode).toBe(250);
    expect(o.requests.filter((q) => q.ok)).toHaveLength(2);
    const sales = u.xoauth2Attempts.filter((a) => a.username === 'sales@contoso.example').map((a) => a.ok);
    expect(sales).toEqual([false, true]);
  });

  it('refresh_token: a rotated refresh token is kept in the state directory (0600), not in the YAML', async () => {
    const o = await oauth({ refreshTokens: { 'rt-alice-1': 'alice@contoso.example' }, rotateRefreshTokens: true });
    const u = await xoauthUpstream(o);
    const r = await relay(yaml(o, u.port, { grant: 'refresh_token' }));
    expect((await send(r, 'alice@contoso.example')).finalCode).toBe(250);
    expect(u.xoauth2Attempts.at(-1)).toMatchObject({ username: 'alice@contoso.example', ok: true });
    const dir = join(r.dir, 'state', 'oauth');
    const [file] = readdirSync(dir);
    expect(statSync(join(dir, file!)).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(readFileSync(join(dir, file!), 'utf8')) as { refresh_token: string };
    expect(saved.refresh_token).not.toBe('rt-alice-1');
    expect(o.refreshTokens.find((t) => t.refreshToken === saved.refresh_token)?.valid).toBe(true);
    expect(readFileSync(r.configFile, 'utf8')).toContain('rt-alice-1');
  });

  it('a revoked refresh token gives the classified failure with the fix', async () => {
    const o = await oauth({ refreshTokens: { 'rt-alice-1': 'alice@contoso.example' } });
    o.revoke('rt-alice-1');
    const u = await xoauthUpstream(o);
    const r = await relay(yaml(o, u.port, { grant: 'refresh_token' }));
    const sent = await send(r, 'alice@contoso.example');
    expect(sent.finalCode).toBe(451);
    expect(sent.finalReply).toMatch(/^451 4\.7\.0 OAuth token endpoint refused account alice@contoso\.example \(invalid_grant: .*\); the refresh token of alice@contoso\.example expired or was revoked: run `sendas oauth login --config .* --account agents\[0\]`$/);
    expect(r.logs.find((l) => l.result === 'refused')).toMatchObject({ kind: 'auth' });
  });

  it('a wrong client secret is classified as such', async () => {
    const o = await oauth();
    const u = await xoauthUpstream(o);
    const r = await relay(yaml(o, u.port).replace(`client_secret: ${CLIENT.clientSecret}`, 'client_secret: expired-secret'));
    const sent = await send(r, 'support@contoso.example');
    expect(sent.finalCode).toBe(451);
    expect(sent.finalReply).toMatch(/invalid_client.*client secret wrong or expired: servers\[0\]\.oauth\.client_secret/);
  });

  it('an unreachable token endpoint is a temporary network failure naming the endpoint', async () => {
    const o = await oauth();
    const u = await xoauthUpstream(o);
    const { freePort } = await import('../support/upstream.js');
    const deadUrl = `http://127.0.0.1:${await freePort()}/token`;
    const r = await relay(yaml(o, u.port).replace(`token_url: ${o.tokenUrl}`, `token_url: ${deadUrl}`));
    const sent = await send(r, 'support@contoso.example');
    expect(sent.finalCode).toBe(451);
    expect(sent.finalReply).toBe(`451 4.4.1 Cannot reach the OAuth token endpoint ${deadUrl} for account support@contoso.example (ECONNREFUSED)`);
  });

  for (const kind of ['socks5', 'http'] as const) {
    it(`goes through a ${kind === 'http' ? 'HTTP CONNECT' : 'SOCKS5'} proxy when the server has proxy:`, async () => {
      const u = await startTestUpstream({ accounts: [{ username: 'relay@contoso.example', password: 'pw-relay' }] });
      closers.push(u);
      const proxy: TestProxy = kind === 'http' ? await startHttpConnectProxy() : await startSocksProxy();
      closers.push(proxy);
      const r = await relay(`
delivery: passthrough
servers:
  - name: main
    host: 127.0.0.1
    port: ${u.port}
    security: none
    username: relay@contoso.example
    password: pw-relay
    proxy: ${proxy.url}
channels:
  - name: sales
    address: sales@contoso.example
`);
      expect((await send(r, 'sales@contoso.example')).finalCode).toBe(250);
      expect(proxy.tunnels).toEqual([expect.objectContaining({ host: '127.0.0.1', port: u.port })]);
      expect(u.messages).toHaveLength(1);
    });
  }

  describe('Microsoft Graph (type: graph)', () => {
    const graphYaml = (o: OAuthServer, g: GraphServer, delivery = 'passthrough') => `
delivery: ${delivery}
queue:
  retry: [200ms]
servers:
  - name: graph
    type: graph
    graph_url: ${g.url}
    username: relay@contoso.example
    auth: xoauth2
    oauth:
      client_id: ${CLIENT.clientId}
      client_secret: ${CLIENT.clientSecret}
      grant: client_credentials
      token_url: ${o.tokenUrl}
      scope: https://graph.microsoft.com/.default
channels:
  - name: support
    address: support@contoso.example
    override: {}
  - name: sales
    address: sales@contoso.example
`;
    const graph = async (o: OAuthServer, opts: { throttleNext?: number; mailboxes?: string[] } = {}) => {
      const g = await startGraphServer({ validateToken: (t) => ({ ok: Boolean(o.validate(t)), appOnly: o.validate(t)?.user === null }), ...opts });
      closers.push(g);
      return g;
    };

    it('sends the aligned MIME for the account mailbox with the app token, envelope-only recipients as Bcc', async () => {
      const o = await oauth();
      const g = await graph(o);
      const r = await relay(graphYaml(o, g));
      const sent = await send(r, 'support@contoso.example', 'via graph', ['customer@example.net', 'hidden@example.net']);
      expect(sent.finalCode).toBe(250);
      const got = await g.nextMessage();
      expect(got.mailbox).toBe('support@contoso.example');
      expect(got.appOnly).toBe(true);
      const { head } = split(got.mime);
      expect(headerValues(head, 'From')).toEqual(['support@contoso.example']);
      expect(headerValues(head, 'Bcc')).toEqual(['hidden@example.net']);
      expect(headerValues(head, 'Subject')).toEqual(['via graph']);
      // a channel without override goes out as the server's mailbox, From aligned to it
      expect((await send(r, 'sales@contoso.example', 'as server')).finalCode).toBe(250);
      const second = await g.nextMessage();
      expect(second.mailbox).toBe('relay@contoso.example');
      expect(headerValues(split(second.mime).head, 'From')).toEqual(['relay@contoso.example']);
    });

    it('retries when Graph throttles (429 with Retry-After) instead of failing', async () => {
      const o = await oauth();
      const g = await graph(o, { throttleNext: 1 });
      const r = await relay(graphYaml(o, g));
      expect((await send(r, 'support@contoso.example')).finalCode).toBe(250);
      expect(g.requests.map((q) => q.status)).toEqual([429, 202]);
    });

    it('a mailbox the app may not send as is refused for good, classified as sender', async () => {
      const o = await oauth();
      const g = await graph(o, { mailboxes: ['relay@contoso.example'] });
      const r = await relay(graphYaml(o, g));
      const sent = await send(r, 'support@contoso.example');
      expect(sent.finalCode).toBe(550);
      expect(sent.finalReply).toMatch(/^550 5\.7\.1 Microsoft Graph \(graph, .*\) for mailbox support@contoso\.example refused: 403 ErrorAccessDenied/);
    });

    it('goes through the queue like SMTP, in one call whatever max_recipients says', async () => {
      const o = await oauth();
      const g = await graph(o, { throttleNext: 0 });
      const r = await relay(graphYaml(o, g, 'queue').replace('    username: relay@contoso.example\n', '    username: relay@contoso.example\n    max_recipients: 1\n'));
      expect((await send(r, 'support@contoso.example', 'queued graph', ['a@example.net', 'b@example.net'])).finalCode).toBe(250);
      const got = await g.nextMessage();
      expect(headerValues(split(got.mime).head, 'Subject')).toEqual(['queued graph']);
      await r.waitForLog((l) => l.msg === 'removed from the queue: every recipient has the message');
      expect(g.messages).toHaveLength(1);
    });
  });
});
