import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newIdentityFile } from '../../src/config/age.js';
import { startOAuthServer, type OAuthServer } from '../support/oauth-server.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { message, startRelay, type RunningRelay } from './harness.js';

const CLIENT = { clientId: 'sendas-app', clientSecret: 'app-secret-21' };

/** Two real relays sharing one Redis (`cluster:`): one token request and one rotation chain for both. */
describe('OAuth tokens shared by two relays (cluster:)', () => {
  let redis: TestRedis;
  let oauth: OAuthServer;
  let upstream: TestUpstream;
  /** Its access tokens expire within the relay's 60 s margin: every send asks for one, with the newest refresh token. */
  let shortLived: OAuthServer;
  let identity: string;
  const relays: RunningRelay[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    // rotating, and strict: a refresh token rotated away is refused
    oauth = await startOAuthServer({ clients: [CLIENT], rotateRefreshTokens: true, refreshTokens: { 'rt-alice-1': 'alice@contoso.example' } });
    shortLived = await startOAuthServer({ clients: [CLIENT], rotateRefreshTokens: true, refreshTokens: { 'rt-alice-1': 'alice@contoso.example' }, accessTokenTtlSeconds: 60 });
    upstream = await startTestUpstream({ xoauth2: (user, token) => Boolean((oauth.validate(token) ?? shortLived.validate(token))?.user === user) });
    identity = (await newIdentityFile(new Date())).text.split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1'))!;
  });
  afterAll(async () => {
    for (const r of relays) await r.stop();
    await upstream?.close();
    await oauth?.close();
    await shortLived?.close();
    await redis?.stop();
  });

  const yaml = (node: string, o: OAuthServer = oauth) => `
delivery: passthrough
state_dir: ./state
cluster:
  redis: {url: "${redis.url}", key_prefix: "e2e-oauth-${process.pid}-${o === oauth ? 1 : 2}"}
  node_id: ${node}
servers:
  - name: m365
    host: 127.0.0.1
    port: ${upstream.port}
    security: none
    auth: xoauth2
    username: relay@contoso.example
    oauth:
      client_id: ${CLIENT.clientId}
      client_secret: ${CLIENT.clientSecret}
      grant: refresh_token
      token_url: ${o.tokenUrl}
agents:
  - name: alice
    address: alice@contoso.example
    override:
      oauth: {refresh_token: rt-alice-1}
`;
  const start = async (o: OAuthServer, nodes = ['relay-a', 'relay-b']) => {
    const started: RunningRelay[] = [];
    for (const node of nodes) started.push(await startRelay(yaml(node, o), { env: { SENDAS_SECRET_KEY: identity } }));
    relays.push(...started);
    return started;
  };
  const send = (r: RunningRelay, subject: string) =>
    swaks({ server: '127.0.0.1', port: r.port, from: 'alice@contoso.example', to: 'customer@example.net', data: message({ From: 'alice@contoso.example', To: 'customer@example.net', Subject: subject }) });

  it('the second relay signs in with the first one\'s token; no secret in either log', async () => {
    const [a, b] = await start(oauth);
    expect((await send(a!, 'from a')).finalCode).toBe(250);
    expect((await send(b!, 'from b')).finalCode).toBe(250);
    expect(oauth.requests.map((q) => [q.grant, q.ok])).toEqual([['refresh_token', true]]);
    expect(upstream.xoauth2Attempts.map((x) => x.ok)).toEqual([true, true]);
    for (const r of relays) {
      const log = r.rawLog();
      expect(log).not.toContain('cluster is set but no secret key is');
      for (const secret of [CLIENT.clientSecret, identity, ...oauth.issued.map((t) => t.accessToken), ...oauth.refreshTokens.map((t) => t.refreshToken)]) expect(log).not.toContain(secret);
    }
  });

  it('a refresh token rotated by one relay is the one the next refreshes with (the endpoint refuses the one rotated away)', async () => {
    // each relay has only rt-alice-1 of the YAML, and its own empty state_dir
    const trio = await start(shortLived, ['relay-a', 'relay-b', 'relay-c']);
    for (const [i, r] of trio.entries()) expect((await send(r, `message ${i + 1}`)).finalCode).toBe(250);
    expect(shortLived.requests.map((q) => q.ok)).toEqual([true, true, true]);
  });
});
