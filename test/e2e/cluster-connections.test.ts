import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, startRelay, type RunningRelay } from './harness.js';

/**
 * Three relays sharing one Microsoft 365 account (connections: 2) through Redis: the upstream
 * never sees more than 2 connections signed in with the login at once, idle pooled ones
 * included, and every message is delivered.
 */
const LOGIN = 'relay@acme.example';

function yaml(upstream: number, redisUrl: string, prefix: string, node: string, delivery = 'queue'): string {
  return `
delivery: ${delivery}
queue:
  retry: [1s]
cluster:
  redis: {url: "${redisUrl}", key_prefix: ${prefix}}
  node_id: ${node}
  lease_ttl: 2s
servers:
  - name: m365
    host: 127.0.0.1
    port: ${upstream}
    security: none
    auth: login
    username: ${LOGIN}
    password: server-secret-1
    connections: 2
channels:
  - name: sales
    address: sales@acme.example
`;
}

/** `large`: every other message over 64 KiB, which the main thread streams while the small ones go to the upstream thread. */
async function send(relay: RunningRelay, tag: string, count: number, large = false): Promise<void> {
  const client = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, ignoreTLS: true, pool: true, maxConnections: 3 });
  const text = (i: number) => (large && i % 2 === 1 ? `ticket update\n${'attached log line\n'.repeat(6_000)}` : 'ticket update\n');
  await Promise.all(Array.from({ length: count }, (_, i) => client.sendMail({ from: 'sales@acme.example', to: `customer${i}@example.net`, subject: `${tag}-${i}`, text: text(i) })));
  client.close();
}

async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('three relays, one account with connections: 2 (leases in a real redis-server)', () => {
  let redis: TestRedis;
  let upstream: TestUpstream;
  const relays: RunningRelay[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    upstream = await startTestUpstream({ accounts: ACCOUNTS });
  });
  afterAll(async () => {
    for (const r of relays.splice(0)) await r.stop();
    await upstream?.close();
    await redis?.stop();
  });

  it('30 messages over three relays: at most 2 sessions of the login at the upstream, all delivered; Redis killed mid-load: mail keeps flowing, then leases again', async () => {
    for (const node of ['r1', 'r2', 'r3']) relays.push(await startRelay(yaml(upstream.port, redis.url, `cc${process.pid}`, node)));
    await Promise.all(relays.map((r, i) => send(r, `r${i + 1}`, 10)));
    await until('30 messages delivered', () => upstream.messages.length >= 30);
    expect(upstream.messages).toHaveLength(30);
    expect(upstream.peakSessions.get(LOGIN)).toBeLessThanOrEqual(2);
    expect(upstream.peakSessions.get(LOGIN)).toBeGreaterThan(0);

    // Redis gone: each relay runs on its share (2 over 3 relays: 1 each), nothing is lost
    await redis.kill();
    await Promise.all(relays.map((r) => r.waitForLog((l) => String(l.msg).includes('Redis does not answer'), { timeoutMs: 10_000 })));
    await Promise.all(relays.map((r, i) => send(r, `down-r${i + 1}`, 3)));
    await until('39 messages delivered', () => upstream.messages.length >= 39);
    // 1 each at most: the local share, said in README as what an outage costs
    expect(Math.max(...[...upstream.openSessions.values()])).toBeLessThanOrEqual(3);

    // back: the relays take leases again before they grow past their share
    await redis.restart();
    await Promise.all(relays.map((r) => r.waitForLog((l) => String(l.msg).includes('Redis answers again'), { timeoutMs: 10_000 })));
    // the sessions of the outage close as the leases are checked (held more than allowed) or go idle
    await until('the outage sessions are closed', () => (upstream.openSessions.get(LOGIN) ?? 0) <= 2, 10_000);
    upstream.peakSessions.set(LOGIN, upstream.openSessions.get(LOGIN) ?? 0);
    await Promise.all(relays.map((r, i) => send(r, `back-r${i + 1}`, 4)));
    await until('51 messages delivered', () => upstream.messages.length >= 51);
    expect(upstream.messages).toHaveLength(51);
    expect(upstream.peakSessions.get(LOGIN)).toBeLessThanOrEqual(2);
    for (const r of relays.splice(0)) await r.stop();
  });

  it('passthrough: a message waits for one of the account’s leases while its client waits; at most 2 sessions, all delivered', async () => {
    const before = upstream.messages.length;
    await until('the first test’s sessions are closed', () => (upstream.openSessions.get(LOGIN) ?? 0) === 0, 10_000);
    upstream.peakSessions.delete(LOGIN);
    for (const node of ['p1', 'p2', 'p3']) relays.push(await startRelay(yaml(upstream.port, redis.url, `cp${process.pid}`, node, 'passthrough')));
    await Promise.all(relays.map((r, i) => send(r, `p${i + 1}`, 4)));
    // passthrough answers after the upstream took it: everything is there
    expect(upstream.messages.length - before).toBe(12);
    expect(upstream.peakSessions.get(LOGIN)).toBeLessThanOrEqual(2);
  });

  it('small and large messages at once: the account’s connections move between the threads, never more than 2 sessions, all delivered', async () => {
    for (const r of relays.splice(0)) await r.stop();
    const before = upstream.messages.length;
    await until('the earlier sessions are closed', () => (upstream.openSessions.get(LOGIN) ?? 0) === 0, 10_000);
    upstream.peakSessions.delete(LOGIN);
    for (const node of ['m1', 'm2', 'm3']) relays.push(await startRelay(yaml(upstream.port, redis.url, `cm${process.pid}`, node)));
    await Promise.all(relays.map((r, i) => send(r, `m${i + 1}`, 8, true)));
    await until('24 messages delivered', () => upstream.messages.length - before >= 24);
    expect(upstream.messages.length - before).toBe(24);
    expect(upstream.messages.slice(before).filter((m) => m.raw.length > 65_536)).toHaveLength(12);
    expect(upstream.peakSessions.get(LOGIN)).toBeLessThanOrEqual(2);
    for (const r of relays.splice(0)) await r.stop();
  });
});
