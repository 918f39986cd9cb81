import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Cluster, type ClusterStatus } from '../../src/cluster/cluster.js';
import { readRegistry } from '../../src/cluster/registry-read.js';
import { RELAY_VERSION } from '../../src/cluster/store.js';
import { formatRegistry } from '../../src/cli/status.js';
import { parseConfig } from '../../src/config/load.js';
import { Secret } from '../../src/config/secret.js';
import { registerClusterMetrics } from '../../src/ops/cluster-metrics.js';
import { renderStatusPage } from '../../src/ops/page/render.js';
import { relayStatus } from '../../src/ops/status.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis({ password: 'cluster-pw-9' });
});
afterAll(() => redis?.stop());

const snapshot = parseConfig('servers:\n  - name: main\n    host: smtp.acme.example\n    username: relay@acme.example\n    password: server-pw-1\n', '/etc/sendas/relay.yaml', { env: {} });

function cluster(nodeId: string, keyPrefix: string, queueDepth = 0) {
  const logger = pino({ level: 'silent' });
  return new Cluster({ config: { url: new Secret(redis.url, 'inline'), keyPrefix, nodeId, leaseTtlMs: 30_000 }, logger, configVersion: () => 'cfg-1a2b', queueDepth: () => queueDepth, startedAt: new Date() });
}

async function until(what: string, ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  // ioredis reports the lost connection by an event on its own schedule
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the cluster in /status, on the status page and in /metrics (real redis-server)', () => {
  it('lists every replica with its version, config and queue; the metrics follow Redis down and back', async () => {
    const a = cluster('relay-a', `st${process.pid}`, 3);
    const b = cluster('relay-<b>', `st${process.pid}`, 12);
    const registry = new Registry();
    registerClusterMetrics(registry, a);
    await a.start();
    await b.start();
    await a.registry.heartbeat();
    try {
      const status = relayStatus({ snapshot, loadedAt: new Date(), lastReloadError: undefined, queue: undefined, cluster: a.status() });
      expect(status.cluster).toMatchObject({ node: 'relay-a', redis: 'up', replicas: 2 });
      expect(status.cluster!.nodes.map((n) => [n.node, n.config, n.queueDepth])).toEqual([['relay-a', 'cfg-1a2b', 3], ['relay-<b>', 'cfg-1a2b', 12]]);

      const page = renderStatusPage(status, { now: Date.now() });
      const block = page.slice(page.indexOf('<section id="cluster">'));
      expect(block).toContain('<tr data-node="relay-a">');
      expect(block).toContain('relay-&lt;b&gt;');
      expect(block).not.toContain('relay-<b>');
      expect(block).toMatch(/<td class="num">12<\/td><td><time datetime="[^"]+">\d+s ago<\/time>/);
      expect(block).toMatch(/Redis <span class="badge default">up<\/span>/);
      expect(page).not.toContain('cluster-pw-9');
      expect(JSON.stringify(status)).not.toContain('cluster-pw-9');

      let text = await registry.metrics();
      expect(text).toMatch(/^sendas_cluster_redis_up 1$/m);
      expect(text).toMatch(/^sendas_cluster_nodes 2$/m);
      expect(text).toMatch(/^sendas_cluster_redis_outages_total 0$/m);

      await redis.kill();
      await until('Redis seen down', () => !a.up);
      text = await registry.metrics();
      expect(text).toMatch(/^sendas_cluster_redis_up 0$/m);
      // the count last seen: what each replica divides its limits by now
      expect(text).toMatch(/^sendas_cluster_nodes 2$/m);
      expect(text).toMatch(/^sendas_cluster_redis_outages_total 1$/m);
      const down = renderStatusPage(relayStatus({ snapshot, loadedAt: new Date(), lastReloadError: undefined, queue: undefined, cluster: a.status() }), { now: Date.now() });
      expect(down).toMatch(/Redis <span class="badge problem">down<\/span>.*divided by the 2 replicas last seen/s);

      await redis.restart();
      await until('Redis seen again', () => a.up);
      expect(await registry.metrics()).toMatch(/^sendas_cluster_redis_up 1$/m);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('a registry entry written by another build without some fields reads "?" in sendas status --cluster and /status; one naming no node is left out', async () => {
    const prefix = `old${process.pid}`;
    const a = cluster('relay-a', prefix);
    await a.start();
    const { store } = a;
    const now = store.now();
    await store.redis.set(store.key('node', 'relay-old'), JSON.stringify({ node: 'relay-old', queueDepth: 4, heartbeat: new Date(now).toISOString() }));
    await store.redis.set(store.key('node', 'junk'), '42');
    await store.redis.zadd(store.key('nodes'), now, 'relay-old', now, 'junk');
    const view = (await readRegistry(store, 30_000))!;
    expect(view.nodes.map((n) => [n.node, n.version, n.config, n.queueDepth])).toEqual([['relay-a', RELAY_VERSION, 'cfg-1a2b', 0], ['relay-old', '?', '?', 4]]);
    const table = formatRegistry(view, 'heading', { configVersion: 'cfg-1a2b', file: 'relay.yaml' }).split('\n');
    expect(table[3]).toMatch(/^relay-old +\? +\? +4 +0s ago$/);
    await a.registry.heartbeat();
    expect(a.status().nodes.map((n) => n.node)).toEqual(['relay-a', 'relay-old']);
    await a.stop();
  });

  it('no cluster: no section on the page, no cluster key in /status', () => {
    const status = relayStatus({ snapshot, loadedAt: new Date(), lastReloadError: undefined, queue: undefined });
    expect(status).not.toHaveProperty('cluster');
    expect(renderStatusPage(status, { now: Date.now() })).not.toContain('id="cluster"');
  });

  it('escapes the problem text too', () => {
    const c: ClusterStatus = { node: 'n1', redis: 'down', since: new Date(0).toISOString(), problem: '<img src=x>', replicas: 1, nodes: [] };
    const page = renderStatusPage(relayStatus({ snapshot, loadedAt: new Date(), lastReloadError: undefined, queue: undefined, cluster: c }), { now: Date.now() });
    expect(page).toContain('&lt;img src=x&gt;');
    expect(page).not.toContain('<img');
  });
});
