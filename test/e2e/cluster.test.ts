import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newIdentityFile } from '../../src/config/age.js';
import { compiledCli } from '../support/cli.js';
import { startOAuthServer, type OAuthServer } from '../support/oauth-server.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { channelFor, messagesOf, mostInWindow, passwordServer, sendAll, startReplicas, subjectOf, until, UPSTREAM_ACCOUNT, type ReplicaSet } from '../support/replicas.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';

const CLIENT = { clientId: 'sendas-app', clientSecret: 'app-secret-11' };

/**
 * Three relay processes sharing one Redis and one account per server: what the upstream sees
 * must be what one relay with these limits would do. Each server is its own account, so the
 * tests share the replicas without sharing a limit.
 */
describe('three replicas sharing limits and tokens through Redis (real processes)', () => {
  let redis: TestRedis;
  let upstream: TestUpstream;
  let oauth: OAuthServer;
  let rotating: OAuthServer;
  let set: ReplicaSet;
  let secretKey: string;
  const xoauth = (o: OAuthServer) => (user: string, token: string) => {
    const t = o.validate(token);
    return Boolean(t && (t.user === null || t.user === user));
  };

  beforeAll(async () => {
    const cli = await compiledCli(mkdtempSync(join(tmpdir(), 'sendas-cluster-cli-')));
    redis = await startRedis();
    oauth = await startOAuthServer({ clients: [CLIENT] });
    // expires_in 60 s is within sendas's refresh margin: every sign-in refreshes, and each refresh rotates the refresh token
    rotating = await startOAuthServer({ clients: [CLIENT], accessTokenTtlSeconds: 60, rotateRefreshTokens: true, refreshTokens: { 'rt-rotating-1': 'rotating@acme.example' } });
    upstream = await startTestUpstream({
      accounts: ['rated', 'pooled', 'budget'].map(UPSTREAM_ACCOUNT),
      xoauth2: (user, token) => (user === 'rotating@acme.example' ? xoauth(rotating)(user, token) : xoauth(oauth)(user, token)),
      // a slow provider for the pooled account: its transactions overlap, so the replicas want every connection they may have
      replyDelayMs: (login) => (login === 'pooled@acme.example' ? 150 : 0),
    });
    const oauthServer = (name: string, o: OAuthServer, grant: string) => `  - name: ${name}
    host: 127.0.0.1
    port: ${upstream.port}
    security: none
    auth: xoauth2
    username: ${name}@acme.example
    oauth:
      client_id: ${CLIENT.clientId}
      client_secret: ${CLIENT.clientSecret}
      grant: ${grant}
      token_url: ${o.tokenUrl}
      scope: https://outlook.office365.com/.default
${grant === 'refresh_token' ? '      refresh_token: rt-rotating-1\n' : ''}`;
    // the one key of every replica: shared tokens are kept in Redis encrypted to it
    secretKey = (await newIdentityFile(new Date())).text;
    set = await startReplicas({
      secretKey,
      count: 3,
      redisUrl: redis.url,
      prefix: 'shared',
      cli,
      servers: [
        passwordServer('rated', upstream.port, '    default: true\n    rate: 5/s\n'),
        passwordServer('pooled', upstream.port, '    connections: 2\n'),
        passwordServer('budget', upstream.port, '    daily: {messages: 4}\n'),
        oauthServer('app', oauth, 'client_credentials'),
        oauthServer('rotating', rotating, 'refresh_token'),
      ].join(''),
      channels: ['rated', 'pooled', 'budget', 'app', 'rotating'].map(channelFor).join(''),
    });
  }, 120_000);

  afterAll(async () => {
    const output = set?.replicas.flatMap((r) => [...r.proc.lines, r.proc.stderr()]).join('\n') ?? '';
    await set?.stop();
    await Promise.all([upstream?.close(), oauth?.close(), rotating?.close(), redis?.stop()]);
    const identity = secretKey.split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1'))!;
    const tokens = [oauth, rotating].flatMap((o) => [...o.issued.map((t) => t.accessToken), ...o.refreshTokens.map((t) => t.refreshToken)]);
    for (const secret of ['app-secret-11', 'pw-rated', 'pw-pooled', identity, ...tokens]) expect(output).not.toContain(secret);
    // with the key, tokens are shared: no replica says they stay its own
    expect(output).not.toContain('OAuth tokens are not shared');
  });

  /** Sends `perReplica` messages of a channel to each replica at once; every one must get its 250. */
  const load = async (channel: string, perReplica: number): Promise<string[]> => {
    const subjects = set.replicas.map((r) => Array.from({ length: perReplica }, (_, i) => `${channel}-${r.node}-${i}`));
    const accepted = await Promise.all(set.replicas.map((r, i) => sendAll(r.proc.port, `${channel}@acme.example`, subjects[i]!)));
    expect(accepted.flat().sort()).toEqual(subjects.flat().sort());
    return subjects.flat();
  };
  const delivered = (login: string, subjects: readonly string[]) => {
    const got = new Set(messagesOf(upstream, login).map(subjectOf));
    return subjects.every((s) => got.has(s));
  };

  it('rate: 5/s — the upstream never gets more than 5 of the account’s messages in any second', async () => {
    const subjects = await load('rated', 5);
    await until(() => delivered('rated@acme.example', subjects), 15_000, () => `${messagesOf(upstream, 'rated@acme.example').length} of 15 delivered`);
    // counted as the upstream counts: when each transaction began there, and when its 250 went out
    const began = messagesOf(upstream, 'rated@acme.example').map((m) => m.startedAt!);
    const replied = messagesOf(upstream, 'rated@acme.example').map((m) => m.repliedAt!);
    expect(mostInWindow(began, 1000)).toBeLessThanOrEqual(5);
    expect(mostInWindow(replied, 1000)).toBeLessThanOrEqual(5);
    // 15 messages at 5 per second take two windows at least after the first burst
    expect(Math.max(...replied) - Math.min(...replied)).toBeGreaterThanOrEqual(2 * 1000);
  });

  it('connections: 2 — never more than 2 signed-in sessions of the login at once (idle pooled ones included), and all mail delivered', async () => {
    const subjects = await load('pooled', 6);
    await until(() => delivered('pooled@acme.example', subjects), 15_000, () => `${messagesOf(upstream, 'pooled@acme.example').length} of 18 delivered`);
    expect(upstream.peakSessions.get('pooled@acme.example')).toBe(2);
    expect(upstream.limitRefusals).toEqual([]);
  });

  it('daily: {messages: 4} — four messages in all go upstream, the others wait for the quota on whichever replica has them', async () => {
    const subjects = await load('budget', 2);
    const waiting = () => new Set(set.replicas.flatMap((r) => r.proc.lines.filter((l) => l.includes('"result":"quota"') && l.includes('"server":"budget"')).map((l) => (JSON.parse(l) as { id: string }).id)));
    await until(() => messagesOf(upstream, 'budget@acme.example').length + waiting().size >= subjects.length, 15_000, () => `${messagesOf(upstream, 'budget@acme.example').length} delivered, ${waiting().size} waiting for the quota`);
    expect(messagesOf(upstream, 'budget@acme.example')).toHaveLength(4);
    expect(waiting().size).toBe(2);
  });

  it('OAuth client_credentials: one token request serves all three replicas', async () => {
    const subjects = await load('app', 1);
    await until(() => delivered('app@acme.example', subjects), 15_000, () => `${messagesOf(upstream, 'app@acme.example').length} of 3 delivered; token requests: ${oauth.requests.map((q) => (q.ok ? 'ok' : q.error)).join(', ')}`);
    expect(oauth.requests.map((q) => [q.grant, q.ok])).toEqual([['client_credentials', true]]);
    expect(upstream.xoauth2Attempts.filter((a) => a.username === 'app@acme.example').every((a) => a.ok)).toBe(true);
  });

  it('a rotated refresh token is used by all three replicas: no refresh is refused', async () => {
    for (const r of set.replicas) {
      const subject = `rotating-${r.node}`;
      expect(await sendAll(r.proc.port, 'rotating@acme.example', [subject])).toEqual([subject]);
      await until(() => delivered('rotating@acme.example', [subject]), 10_000, () => `${subject} not delivered; token requests: ${rotating.requests.map((q) => (q.ok ? 'ok' : q.error)).join(', ')}`);
    }
    // each replica's sign-in refreshed (the access token is always within the margin), each with the refresh token the one before got
    expect(rotating.requests.map((q) => [q.grant, q.ok])).toEqual([['refresh_token', true], ['refresh_token', true], ['refresh_token', true]]);
    expect(rotating.refreshTokens.map((t) => t.valid)).toEqual([false, false, false, true]);
    expect(upstream.xoauth2Attempts.filter((a) => a.username === 'rotating@acme.example').every((a) => a.ok)).toBe(true);
  });
});
