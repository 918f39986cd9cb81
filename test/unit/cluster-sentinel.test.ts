/** cluster.redis.sentinel: a real master, its replica and a Sentinel (Debian's redis-server); the master killed mid-run. */
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../../src/cluster/cluster.js';
import { Secret } from '../../src/config/secret.js';
import { startRedis, startSentinel, type TestRedis } from '../support/redis-server.js';

let master: TestRedis;
let replica: TestRedis;
let sentinel: Awaited<ReturnType<typeof startSentinel>>;

beforeAll(async () => {
  master = await startRedis({ password: 'sentinel-pw-3' });
  replica = await startRedis({ password: 'sentinel-pw-3', replicaOf: master.port });
  sentinel = await startSentinel('sendas-main', master.port, { authPass: 'sentinel-pw-3', password: 'sentinel-own-8' });
});
afterAll(async () => {
  await sentinel?.stop();
  await replica?.stop();
  await master?.stop();
});

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  // a failover is Sentinel's schedule (down-after 500 ms, then the election): polled
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('cluster.redis through Sentinel (real master, replica and Sentinel)', () => {
  it('finds the master by name, and follows it to the replica when the master dies', async () => {
    // the URL's host is not used: the Sentinel names the master; password and db apply to it
    const config = { url: new Secret('redis://:sentinel-pw-3@sendas-main/0', 'inline'), sentinel: { master: 'sendas-main', hosts: [{ host: '127.0.0.1', port: sentinel.port }], password: new Secret('sentinel-own-8', 'inline') }, keyPrefix: 'snt', nodeId: 'r1', leaseTtlMs: 3_000 };
    const c = new Cluster({ config, logger: pino({ level: 'silent' }), configVersion: () => 'v1', queueDepth: () => 0, startedAt: new Date() });
    await c.start();
    expect(c.up).toBe(true);
    const port = async () => Number(await c.store.run(async (r) => (/tcp_port:(\d+)/.exec(await r.info('server')) ?? [])[1]));
    expect(await port()).toBe(master.port);
    await c.registry.heartbeat();
    expect(c.status().nodes.map((n) => n.node)).toEqual(['r1']);

    await master.kill();
    await until('the replica promoted and the store on it', async () => c.up && (await port()) === replica.port);
    // the registry, replicated before the kill or written again, is there on the new master
    await c.registry.heartbeat();
    expect(c.status()).toMatchObject({ redis: 'up', nodes: [expect.objectContaining({ node: 'r1' })] });
    await c.stop();
  }, 30_000);
});
