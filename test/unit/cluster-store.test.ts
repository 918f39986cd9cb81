import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Cluster } from '../../src/cluster/cluster.js';
import { Secret } from '../../src/config/secret.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis({ password: 's3cret-redis' });
});
afterAll(() => redis?.stop());

function cluster(nodeId: string, url = redis.url, lines: string[] = [], commandTimeoutMs?: number) {
  const logger = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });
  return new Cluster({ config: { url: new Secret(url, 'inline'), keyPrefix: `t${process.pid}`, nodeId, leaseTtlMs: 3_000 }, logger, configVersion: () => 'v1', queueDepth: () => 7, startedAt: new Date(), ...(commandTimeoutMs ? { commandTimeoutMs } : {}) });
}

describe('cluster store and node registry (real redis-server)', () => {
  it('every replica sees every live one; a replica that stops leaves at once', async () => {
    const a = cluster('a');
    const b = cluster('b');
    await a.start();
    await b.start();
    await a.registry.heartbeat();
    expect(a.status().nodes.map((n) => n.node)).toEqual(['a', 'b']);
    expect(a.status().nodes[1]).toMatchObject({ node: 'b', config: 'v1', queueDepth: 7 });
    expect(a.replicas()).toBe(2);
    expect(a.share(5)).toBe(2);
    await b.stop();
    await a.registry.heartbeat();
    expect(a.status().nodes.map((n) => n.node)).toEqual(['a']);
    await a.stop();
  });

  it('a Redis that does not answer is no error: down, said once without the password, the count last seen kept', async () => {
    const lines: string[] = [];
    const c = cluster('lonely', 'redis://:s3cret-redis@127.0.0.1:1', lines);
    await c.start();
    expect(c.up).toBe(false);
    expect(c.status()).toMatchObject({ redis: 'down', replicas: 1 });
    expect(await c.store.run((r) => r.ping())).toBeUndefined();
    const warnings = lines.filter((l) => l.includes('does not answer'));
    expect(warnings).toHaveLength(1);
    expect(lines.join('\n')).not.toContain('s3cret-redis');
    await c.stop();
  });

  it('a command in flight when Redis dies fails at once and is never sent to the Redis that comes back (its time and its count would be stale)', async () => {
    // a command timeout longer than the test: the failure must come from the connection closing
    const c = cluster('inflight', redis.url, [], 30_000);
    await c.start();
    const key = c.store.key('inflight-count');
    const back = new Promise<void>((resolve) => c.store.onHealth((up) => up && resolve()));
    redis.pause();
    const inFlight = c.store.run((r) => r.incr(key));
    await redis.kill();
    await redis.restart();
    expect(await inFlight).toBeUndefined();
    await back;
    // a resent INCR would have made it 1 on the new Redis
    expect(await c.store.run((r) => r.get(key))).toBeNull();
    await c.stop();
  });
});
