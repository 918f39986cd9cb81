import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Cluster } from '../../src/cluster/cluster.js';
import { DEFAULTS } from '../../src/config/defaults.js';
import { Secret } from '../../src/config/secret.js';
import type { AuthLimitsConfig } from '../../src/config/types.js';
import { isRelayError } from '../../src/errors/relay-error.js';
import { ListenerGuard } from '../../src/listener/guard.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

let prefixes = 0;
let running: Cluster[] = [];
afterEach(async () => {
  await Promise.all(running.map((c) => c.stop()));
  running = [];
});

/** Replicas sharing one key prefix, each with its own guard (as each relay has), all in the registry. */
async function replicas(names: string[], lines: string[]) {
  const keyPrefix = `auth${process.pid}-${++prefixes}`;
  const logger = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });
  const nodes = names.map((nodeId) => {
    const cluster = new Cluster({ config: { url: new Secret(redis.url, 'inline'), keyPrefix, nodeId, leaseTtlMs: 30_000 }, logger, configVersion: () => 'v1', queueDepth: () => 0, startedAt: new Date() });
    running.push(cluster);
    return { cluster, guard: new ListenerGuard({ logger, cluster }) };
  });
  for (const n of nodes) await n.cluster.start();
  for (const n of nodes) await n.cluster.registry.heartbeat();
  return nodes;
}

const limits: AuthLimitsConfig = { ...DEFAULTS.limits.auth, failuresPerAddress: 6, failuresPerLogin: 100, windowMs: 60_000, lockoutMs: 120_000, delayMs: 0 };

/** One AUTH on a replica's guard: the user, or the reply code (535 wrong password, 454 locked out). */
async function login(node: { guard: ListenerGuard }, address: string, password: string): Promise<string | number> {
  const r = await node.guard.authenticate(address, 'crm', limits, () => (password === 'right' ? 'crm' : undefined));
  return isRelayError(r) ? r.status.code : r;
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  // Redis' state as ioredis reports it: no event to await across three clients
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the guessing limiter shared through Redis (real redis-server)', () => {
  it('failures on two replicas add up to one lockout the third enforces', async () => {
    const lines: string[] = [];
    const [a, b, c] = await replicas(['a', 'b', 'c'], lines);
    expect(a!.cluster.replicas()).toBe(3);
    for (let i = 0; i < 3; i++) expect(await login(a!, '192.0.2.7', 'wrong')).toBe(535);
    for (let i = 0; i < 3; i++) expect(await login(b!, '192.0.2.7', 'wrong')).toBe(535);
    // the sixth failure (on b) reached failures_per_address: every replica refuses even the right password
    expect(await login(c!, '192.0.2.7', 'right')).toBe(454);
    expect(await login(a!, '192.0.2.7', 'right')).toBe(454);
    expect(await login(c!, '192.0.2.8', 'right')).toBe('crm');
    expect(lines.filter((l) => l.includes('auth lockout scope=address address=192.0.2.7'))).toHaveLength(1);
    // each replica alone saw three failures: without the shared count nobody would be locked
    expect(lines.join('\n')).not.toContain('failed-login counter is unavailable');
  });

  it('Redis gone: each replica locks at its share (6 / 3 replicas = 2), nothing throws; back: the count is shared again', async () => {
    const lines: string[] = [];
    const [a, b, c] = await replicas(['a', 'b', 'c'], lines);
    await redis.kill();
    try {
      await until('every replica to see Redis down', () => !a!.cluster.up && !b!.cluster.up && !c!.cluster.up);
      expect(await login(a!, '192.0.2.9', 'wrong')).toBe(535);
      expect(await login(a!, '192.0.2.9', 'wrong')).toBe(535);
      expect(await login(a!, '192.0.2.9', 'right')).toBe(454);
      // b counted nothing for the address: its own share is untouched
      expect(await login(b!, '192.0.2.9', 'wrong')).toBe(535);
      expect(await login(b!, '192.0.2.9', 'right')).toBe('crm');
      expect(lines.join('\n')).not.toContain('failed-login counter is unavailable');
    } finally {
      await redis.restart();
    }
    await until('every replica to see Redis again', () => a!.cluster.up && b!.cluster.up && c!.cluster.up);
    // the lockout a started alone still holds there until it ends
    expect(await login(a!, '192.0.2.9', 'right')).toBe(454);
    // shared again: three failures on b and three on c lock the address on a
    for (let i = 0; i < 3; i++) expect(await login(b!, '198.51.100.4', 'wrong')).toBe(535);
    expect(await login(a!, '198.51.100.4', 'right')).toBe('crm');
    for (let i = 0; i < 3; i++) expect(await login(c!, '198.51.100.4', 'wrong')).toBe(535);
    expect(await login(a!, '198.51.100.4', 'right')).toBe(454);
  });
});
