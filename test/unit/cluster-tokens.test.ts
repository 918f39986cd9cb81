import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../../src/cluster/cluster.js';
import { SharedTokens } from '../../src/cluster/tokens.js';
import { decryptWith, newIdentityFile, parseIdentityFile } from '../../src/config/age.js';
import { accountFor, type Account } from '../../src/config/account.js';
import { loadConfigText, parseConfig } from '../../src/config/load.js';
import { Secret } from '../../src/config/secret.js';
import type { SecretKey } from '../../src/config/secret-key.js';
import { TokenProvider } from '../../src/oauth/tokens.js';
import { startOAuthServer, type OAuthServer } from '../support/oauth-server.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';

/**
 * Three TokenProviders with three Cluster objects are three replicas sharing one real
 * redis-server and one test token endpoint (which counts requests and, when rotating, refuses a
 * refresh token rotated away). Time is a clock the test moves: no test waits for a token to expire.
 */

const HOUR = 3_600_000;
const MAILBOX = 'alice@contoso.example';

let redis: TestRedis;
let key: SecretKey;
let identityLine: string;
beforeAll(async () => {
  redis = await startRedis();
  const made = await newIdentityFile(new Date());
  identityLine = made.text.split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1'))!;
  key = { ...(await parseIdentityFile(made.text)), place: { setBy: 'SENDAS_SECRET_KEY', file: undefined }, where: 'SENDAS_SECRET_KEY' };
});
afterAll(() => redis?.stop());

const yaml = (tokenUrl: string, grant: string, refreshToken = 'rt-alice-1') => `
servers:
  - name: m365
    host: smtp.contoso.example
    auth: xoauth2
    username: relay@contoso.example
    oauth:
      client_id: app
      client_secret: app-secret
      grant: ${grant}
      token_url: ${tokenUrl}
channels:
  - name: support
    address: support@contoso.example
agents:
  - name: alice
    address: ${MAILBOX}
    override:
      oauth: {refresh_token: ${refreshToken}}
`;

function accountOf(server: OAuthServer, grant: 'client_credentials' | 'refresh_token', refreshToken?: string): Account {
  const snapshot = parseConfig(yaml(server.tokenUrl, grant, refreshToken), '/test/relay.yaml', { env: {} });
  const account = accountFor(snapshot, snapshot.identitiesByName.get(grant === 'refresh_token' ? 'alice' : 'support'));
  if (account instanceof Error) throw account;
  return account;
}

interface Replica {
  readonly cluster: Cluster;
  readonly tokens: TokenProvider;
  readonly stateDir: string;
}

let testNo = 0;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A test's world: its own key prefix, token endpoint, clock and log lines; `replicas(n)` starts n of them. */
async function world(opts: { rotate?: boolean; withKey?: boolean; waitMs?: number } = {}) {
  const prefix = `tok${process.pid}-${++testNo}`;
  const server = await startOAuthServer({ clients: [{ clientId: 'app', clientSecret: 'app-secret' }], rotateRefreshTokens: opts.rotate ?? false, refreshTokens: { 'rt-alice-1': MAILBOX } });
  cleanups.push(() => server.close());
  const clock = { now: Date.UTC(2026, 11, 1, 12, 0, 0) };
  const now = () => clock.now;
  const lines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) });
  const secretKey = () => (opts.withKey === false ? undefined : key);
  const replica = async (name: string): Promise<Replica> => {
    const cluster = new Cluster({ config: { url: new Secret(redis.url, 'inline'), keyPrefix: prefix, nodeId: name, leaseTtlMs: 3_000 }, logger, configVersion: () => 'v1', queueDepth: () => 0, startedAt: new Date() });
    await cluster.start();
    const stateDir = mkdtempSync(join(tmpdir(), `sendas-${name}-`));
    cleanups.push(async () => {
      await cluster.stop();
      rmSync(stateDir, { recursive: true, force: true });
    });
    const shared = new SharedTokens({ cluster, logger, secretKey, now, sharedNow: now, ...(opts.waitMs ? { waitMs: opts.waitMs } : {}) });
    return { cluster, stateDir, tokens: new TokenProvider({ stateDir: () => stateDir, logger, now, secretKey, shared }) };
  };
  const replicas = async (n: number) => Promise.all(Array.from({ length: n }, (_, i) => replica(`node-${i + 1}`)));
  return { prefix, server, clock, lines, replicas };
}

/** Every key under the prefix with its value(s), as text: what someone reading Redis would see. */
async function redisDump(prefix: string): Promise<string> {
  const r = new Redis(redis.url);
  try {
    const out: string[] = [];
    for (const k of await r.keys(`${prefix}:*`)) {
      const type = await r.type(k);
      const value = type === 'string' ? await r.get(k) : type === 'zset' ? (await r.zrange(k, 0, -1)).join(' ') : type === 'hash' ? JSON.stringify(await r.hgetall(k)) : type === 'set' ? (await r.smembers(k)).join(' ') : type;
      out.push(`${k} = ${value}`);
    }
    return out.join('\n');
  } finally {
    r.disconnect();
  }
}

/** The token values the server handed out, its refresh tokens and the client secret: none may be in Redis in clear or in a log line. */
function secretsOf(server: OAuthServer): string[] {
  return [...server.issued.map((t) => t.accessToken), ...server.refreshTokens.map((t) => t.refreshToken), 'app-secret', identityLine];
}

async function expectNothingSecret(w: Awaited<ReturnType<typeof world>>): Promise<string> {
  const dump = await redisDump(w.prefix);
  const logs = w.lines.join('\n');
  for (const secret of secretsOf(w.server)) {
    expect(dump).not.toContain(secret);
    expect(logs).not.toContain(secret);
  }
  // key names are digests: no mailbox, app or token endpoint named in Redis
  const names = dump.split('\n').map((l) => l.split(' = ')[0]!);
  for (const n of names) expect(n).not.toMatch(/alice|support|contoso|app|127\.0\.0\.1/);
  return dump;
}

const okRequests = (server: OAuthServer) => server.requests.filter((r) => r.ok).length;

describe('OAuth tokens shared by the replicas (real redis-server, test token endpoint)', () => {
  it('one token request serves three replicas, also when they all need it at once; a fourth one joining takes it from Redis', async () => {
    const w = await world();
    const [a, b, c] = await w.replicas(3);
    const support = accountOf(w.server, 'client_credentials');
    const release = w.server.hold(1);
    const all = Promise.all([a!, b!, c!].map((r) => r.tokens.get(support)));
    await w.server.waitForHeld(1);
    release();
    const got = await all;
    expect(new Set(got.map((t) => t.token)).size).toBe(1);
    expect(w.server.validate(got[0]!.token)).toBeDefined();
    expect(w.server.requests).toHaveLength(1);

    const [d] = await w.replicas(1);
    expect((await d!.tokens.get(support)).token).toBe(got[0]!.token);
    expect(w.server.requests).toHaveLength(1);

    const dump = await expectNothingSecret(w);
    expect(dump).toContain('-----BEGIN AGE ENCRYPTED FILE-----');
  });

  it('at expiry the three refresh once', async () => {
    const w = await world();
    const replicas = await w.replicas(3);
    const support = accountOf(w.server, 'client_credentials');
    const first = await Promise.all(replicas.map((r) => r.tokens.get(support)));
    expect(w.server.requests).toHaveLength(1);

    w.clock.now += HOUR - 60_000;
    const second = await Promise.all(replicas.map((r) => r.tokens.get(support)));
    expect(w.server.requests).toHaveLength(2);
    expect(new Set(second.map((t) => t.token)).size).toBe(1);
    expect(second[0]!.token).not.toBe(first[0]!.token);
    await expectNothingSecret(w);
  });

  it('renew (the upstream refused the token): the first replica refreshes, the others take its token', async () => {
    const w = await world();
    const replicas = await w.replicas(3);
    const [a, b, c] = replicas;
    const support = accountOf(w.server, 'client_credentials');
    const refused = (await Promise.all(replicas.map((r) => r.tokens.get(support))))[0]!.token;

    const renewed = await Promise.all(replicas.map((r) => r.tokens.get(support, true)));
    expect(w.server.requests).toHaveLength(2);
    expect(new Set(renewed.map((t) => t.token)).size).toBe(1);
    expect(renewed[0]!.token).not.toBe(refused);

    // one after the other: each later replica finds a token newer than the one refused to it
    w.clock.now += 1_000;
    const third = await a!.tokens.get(support, true);
    expect(w.server.requests).toHaveLength(3);
    expect((await b!.tokens.get(support, true)).token).toBe(third.token);
    expect((await c!.tokens.get(support, true)).token).toBe(third.token);
    expect(w.server.requests).toHaveLength(3);
  });

  it('a rotated refresh token is used by every replica (the endpoint refuses one rotated away); the state directory keeps it too', async () => {
    const w = await world({ rotate: true });
    const [a, b, c] = await w.replicas(3);
    const alice = accountOf(w.server, 'refresh_token');
    for (const r of [a!, b!, c!]) {
      await r.tokens.get(alice);
      w.clock.now += HOUR;
    }
    // rt-alice-1 once, then each replica the one the previous rotated to
    expect(w.server.requests.map((r) => r.ok)).toEqual([true, true, true]);
    expect(w.server.refreshTokens.filter((t) => t.valid)).toHaveLength(1);

    // at once: one refresh with the newest, and every replica's fallback file has its successor
    const got = await Promise.all([a!, b!, c!].map((r) => r.tokens.get(alice)));
    expect(new Set(got.map((t) => t.token)).size).toBe(1);
    expect(w.server.requests.map((r) => r.ok)).toEqual([true, true, true, true]);
    w.clock.now += HOUR;
    await a!.tokens.get(alice);
    expect(okRequests(w.server)).toBe(5);
    // the fallback for when Redis is away: the newest, encrypted like the shared one
    const newest = w.server.refreshTokens.find((t) => t.valid)!.refreshToken;
    const file = JSON.parse(readFileSync(a!.tokens.stateFile(alice), 'utf8')) as { refresh_token: { age: string } };
    expect(await decryptWith(key, file.refresh_token.age)).toBe(newest);
    await expectNothingSecret(w);
  });

  it('a new refresh token in the YAML wins over the shared one', async () => {
    const w = await world({ rotate: true });
    const [a, b] = await w.replicas(2);
    await a!.tokens.get(accountOf(w.server, 'refresh_token'));
    expect(okRequests(w.server)).toBe(1);

    // ops sign in again and put the new token in the YAML: the rotated one shared in Redis is from the old
    w.server.setRefreshToken('rt-alice-2', MAILBOX);
    for (const t of w.server.refreshTokens) if (t.refreshToken !== 'rt-alice-2') w.server.revoke(t.refreshToken);
    w.clock.now += HOUR;
    await b!.tokens.get(accountOf(w.server, 'refresh_token', 'rt-alice-2'));
    expect(w.server.requests.map((r) => r.ok)).toEqual([true, true]);
  });

  it('Redis down: each replica refreshes on its own without an error; back, they share again', async () => {
    const w = await world();
    const replicas = await w.replicas(3);
    const support = accountOf(w.server, 'client_credentials');
    await Promise.all(replicas.map((r) => r.tokens.get(support)));
    expect(w.server.requests).toHaveLength(1);

    await redis.kill();
    w.clock.now += HOUR;
    const alone = await Promise.all(replicas.map((r) => r.tokens.get(support)));
    expect(w.server.requests).toHaveLength(4);
    expect(new Set(alone.map((t) => t.token)).size).toBe(3);
    // each keeps its own until it expires: no request per message
    await Promise.all(replicas.map((r) => r.tokens.get(support)));
    expect(w.server.requests).toHaveLength(4);

    await redis.restart();
    await until(() => replicas.every((r) => r.cluster.up));
    w.clock.now += HOUR;
    const together = await Promise.all(replicas.map((r) => r.tokens.get(support)));
    expect(w.server.requests).toHaveLength(5);
    expect(new Set(together.map((t) => t.token)).size).toBe(1);
    await expectNothingSecret(w);
  });

  it('a lock holder that takes too long: the others ask on their own after the wait', async () => {
    const w = await world({ waitMs: 300 });
    const [a, b] = await w.replicas(2);
    const support = accountOf(w.server, 'client_credentials');
    const release = w.server.hold(1);
    const slow = a!.tokens.get(support);
    await w.server.waitForHeld(1);
    const own = await b!.tokens.get(support);
    expect(w.server.validate(own.token)).toBeDefined();
    release();
    await slow;
    expect(w.server.requests).toHaveLength(2);
  });

  it('without a secret key nothing goes to Redis: each replica asks on its own, and the config says why', async () => {
    const w = await world({ withKey: false });
    const replicas = await w.replicas(3);
    await Promise.all(replicas.map((r) => r.tokens.get(accountOf(w.server, 'client_credentials'))));
    expect(w.server.requests).toHaveLength(3);
    expect(await redisDump(w.prefix)).not.toMatch(/:oauth:/);

    const text = `${yaml(w.server.tokenUrl, 'client_credentials')}\ncluster:\n  redis: {url: "redis://127.0.0.1:1"}\n`;
    const without = await loadConfigText(text, '/test/relay.yaml', { env: {} });
    expect(without.warnings).toContainEqual({ path: 'secrets.key_file', message: expect.stringContaining('OAuth tokens are not shared') });
    const withKey = await loadConfigText(text, '/test/relay.yaml', { env: { SENDAS_SECRET_KEY: identityLine } });
    expect(withKey.warnings.filter((x) => x.path === 'secrets.key_file')).toEqual([]);
  });
});

/** Polls a condition with a deadline (Redis coming back has no event the test can await here). */
async function until(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
