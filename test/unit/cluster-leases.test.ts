import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Cluster } from '../../src/cluster/cluster.js';
import type { AccountLeases } from '../../src/cluster/account-leases.js';
import { Secret } from '../../src/config/secret.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { Readable } from 'node:stream';
import { accountFor, type Account } from '../../src/config/account.js';
import { DEFAULT_TUNING } from '../../src/transport/options.js';
import { TransportPools } from '../../src/transport/pools.js';
import { startTestUpstream } from '../support/upstream.js';
import { snapshotOf } from './helpers.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

const ACCOUNT = 'm365/agent@contoso.example';
let prefixes = 0;

interface Replica {
  readonly cluster: Cluster;
  readonly leases: AccountLeases;
  /** Accounts whose connections the replica was told to close, in order, with the leases Redis had for them then. */
  readonly closed: { account: string; inRedis: number }[];
  /** Moves this replica's clock (the shared one too: it is the local one plus Redis' offset). */
  skew: number;
}

/** Replicas of one cluster (own key prefix), started and seen by each other. */
async function replicas(n: number, opts: { ttlMs?: number; idleMs?: number } = {}): Promise<Replica[]> {
  const prefix = `leases${process.pid}-${++prefixes}`;
  const out: Replica[] = [];
  for (let i = 1; i <= n; i++) {
    const r = { closed: [], skew: 0 } as unknown as Replica & { cluster: Cluster; leases: AccountLeases };
    const cluster = new Cluster({
      config: { url: new Secret(redis.url, 'inline'), keyPrefix: prefix, nodeId: `r${i}`, leaseTtlMs: opts.ttlMs ?? 3_000 },
      logger: pino({ level: 'silent' }),
      configVersion: () => 'v1',
      queueDepth: () => 0,
      startedAt: new Date(),
      now: () => Date.now() + r.skew,
      leaseIdleMs: opts.idleMs ?? 60_000,
      commandTimeoutMs: 10_000,
    });
    cluster.leases.closeConnectionsWith(async (account) => {
      const entry = { account, inRedis: -1 };
      r.closed.push(entry);
      entry.inRedis = await inRedis(cluster).catch(() => -1); // -1: Redis away
    });
    r.cluster = cluster;
    r.leases = cluster.leases.of(ACCOUNT);
    await cluster.start();
    out.push(r);
  }
  for (const r of out) await r.cluster.registry.heartbeat();
  return out;
}

async function stopAll(rs: Replica[]): Promise<void> {
  for (const r of rs) await r.cluster.stop();
}

function inRedis(cluster: Cluster): Promise<number> {
  return cluster.store.redis.zcard(cluster.store.key('lease', ACCOUNT));
}

/** Polls a condition (the leases are granted asynchronously), with a deadline. */
async function until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function untilAsync(cond: () => Promise<boolean>, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A lane that is full and has entries waiting: asks for one more lease (limit() with every held one running). */
const ask = (r: Replica, connections = 2) => r.leases.limit(connections, connections, r.leases.held);

describe('connection leases (real redis-server)', () => {
  it('three replicas wanting all of an account’s 2 connections hold 2 leases between them, never more', async () => {
    const rs = await replicas(3);
    const total = () => rs.reduce((n, r) => n + r.leases.held, 0);
    let most = 0;
    const deadline = Date.now() + 500;
    // every replica keeps asking, as a busy lane does, for a while
    while (Date.now() < deadline) {
      for (const r of rs) ask(r);
      most = Math.max(most, total());
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(most).toBe(2);
    expect(total()).toBe(2);
    expect(await inRedis(rs[0]!.cluster)).toBe(2);
    // the lane's limit is the leases held
    for (const r of rs) expect(r.leases.limit(2, 2, 0)).toBe(r.leases.held);
    await stopAll(rs);
    // a clean stop gives them back
    const check = (await replicas(1))[0]!;
    expect(await inRedis(check.cluster)).toBe(0);
    await stopAll([check]);
  });

  it('a replica that stops renewing (dead) loses its leases after the TTL and another gets them', async () => {
    const [a, b] = await replicas(2, { ttlMs: 2_000 });
    await until(() => (ask(a!), a!.leases.held === 2), 'a holds 2');
    // b finds them taken
    ask(b!);
    await new Promise((r) => setTimeout(r, 100));
    expect(b!.leases.held).toBe(0);
    // a is gone without a word: no renewal, no release
    a!.cluster.store.redis.disconnect();
    await until(() => !a!.cluster.up, 'a sees Redis gone');
    // still within the TTL: nothing for b
    await b!.cluster.leases.renew();
    ask(b!);
    expect(b!.leases.held).toBe(0);
    // the TTL passes (b's clock moved instead of waiting)
    b!.skew = 2_001;
    await until(() => (ask(b!), b!.leases.held === 2), 'b takes over both leases');
    expect(await inRedis(b!.cluster)).toBe(2);
    await stopAll([a!, b!]);
  });

  it('an idle account closes its connections, then gives its leases back', async () => {
    const [a, b] = await replicas(2, { idleMs: 30 });
    a!.leases.enter();
    await until(() => (ask(a!), a!.leases.held === 2), 'a holds 2');
    a!.leases.exit();
    await until(() => a!.leases.held === 0, 'a gives them back');
    // closed while the leases were still a's: no other replica could open one meanwhile
    expect(a!.closed).toEqual([{ account: ACCOUNT, inRedis: 2 }]);
    expect(await inRedis(a!.cluster)).toBe(0);
    await until(() => (ask(b!), b!.leases.held === 2), 'b gets them');
    await stopAll([a!, b!]);
  });

  it('a renewal that finds a lease taken by another shrinks: the connections close, the lane is told', async () => {
    const [a, b] = await replicas(2);
    await until(() => (ask(a!), a!.leases.held === 2), 'a holds 2');
    a!.leases.enter();
    let told = 0;
    a!.leases.onChange(() => told++);
    // Redis lost them (restarted empty, say) and b took both before a renewed
    await a!.cluster.store.redis.del(a!.cluster.store.key('lease', ACCOUNT));
    await until(() => (ask(b!), b!.leases.held === 2), 'b holds 2');
    await a!.cluster.leases.renew();
    expect(a!.leases.held).toBe(0);
    expect(a!.closed.map((c) => c.account)).toEqual([ACCOUNT]);
    expect(told).toBeGreaterThan(0);
    expect(await inRedis(a!.cluster)).toBe(2);
    await stopAll([a!, b!]);
  });

  it('Redis killed: each replica runs its share at once; Redis back: leases again before the share is passed', async () => {
    const rs = await replicas(3);
    const [a, b, c] = rs as [Replica, Replica, Replica];
    a.leases.enter(); // a's lane is busy
    await until(() => (ask(a), a.leases.held === 2), 'a holds 2');
    expect(b.leases.limit(2, 2, 0)).toBe(0);
    await redis.kill();
    await until(() => rs.every((r) => !r.cluster.up), 'every replica sees Redis gone');
    // 2 connections over 3 replicas: 1 each (never below 1), no exception
    for (const r of rs) expect(r.leases.limit(2, 2, 0)).toBe(1);
    // a held more than its share: its connections close
    expect(a.closed.map((x) => x.account)).toEqual([ACCOUNT]);
    expect(b.closed).toEqual([]);
    await redis.restart();
    await until(() => rs.every((r) => r.cluster.up && !r.leases.stale), 'every replica back on its leases', 15_000);
    // Redis came back empty: a takes its leases again (the renewal retakes what it still held —
    // 1 or 2, as the outage's close went — and its busy lane asks for the rest); the others have none to run on
    expect(a.leases.held).toBeGreaterThanOrEqual(1);
    await until(() => (ask(a), a.leases.held === 2), 'a holds 2 again', 15_000);
    expect(await inRedis(a.cluster)).toBe(2);
    expect(b.leases.limit(2, 2, 0)).toBe(0);
    expect(c.leases.limit(2, 2, 0)).toBe(0);
    await stopAll(rs);
  });
});

describe('connection leases: fairness between busy replicas (real redis-server)', () => {
  it('a replica busy for good gives a lease up each TTL while another waits with none; the waiter, not the giver, takes it', async () => {
    // a short TTL, the renewal timers running: the lanes keep asking, as full lanes do
    const [a, b, c] = await replicas(3, { ttlMs: 400 });
    a!.leases.enter();
    await until(() => (ask(a!), a!.leases.held === 2), 'a holds 2');
    const queue = () => a!.cluster.store.redis.zrange(a!.cluster.store.key('lease-queue', ACCOUNT), 0, -1);
    ask(b!);
    await untilAsync(async () => (await queue()).length === 1, 'b waits');
    ask(c!);
    await untilAsync(async () => (await queue()).length === 2, 'c waits');
    expect(await queue()).toEqual(['r2', 'r3']);
    // within a TTL or two a's renewal sees them waiting: one lease goes, after its connections closed; b, first in line, takes it
    let most = 0;
    const total = () => (most = Math.max(most, a!.leases.held + b!.leases.held + c!.leases.held));
    await until(() => (ask(a!), ask(b!), ask(c!), total(), b!.leases.held === 1), 'b gets one from a');
    expect(a!.closed[0]!.inRedis).toBe(2);
    // then c: a gives up its last one too (it has held it a whole TTL), and queues behind c
    await until(() => (ask(a!), ask(b!), ask(c!), total(), c!.leases.held === 1), 'c gets one');
    expect(most).toBeLessThanOrEqual(2);
    await stopAll([a!, b!, c!]);
  });
});

describe('transport with leased connections: one pool in use per account, closed on request', () => {
  it('a message on another route retires the pool before (its idle connections close); closeAccount resolves once the rest are closed', async () => {
    const login = { username: 'relay@acme.example', password: 'server-pw' };
    const primary = await startTestUpstream({ accounts: [login] });
    const alternate = await startTestUpstream({ accounts: [login] });
    const pools = new TransportPools({ ...DEFAULT_TUNING, helo: 'relay.test' }, undefined, undefined, true);
    try {
      const s = snapshotOf(`
servers:
  - name: main
    default: true
    host: 127.0.0.1
    port: ${primary.port}
    security: none
    username: relay@acme.example
    password: server-pw
    connections: 2
`);
      const a = accountFor(s, undefined) as Account;
      const message = () => Readable.from([Buffer.from('From: <relay@acme.example>\r\nSubject: x\r\n\r\nbody\r\n')], { objectMode: false });
      const envelope = { from: 'relay@acme.example', to: ['c@example.net'], eightBit: false };
      await Promise.all([pools.send(a, undefined, envelope, message()), pools.send(a, undefined, envelope, message())]);
      // pooled: both stay open while idle
      expect(primary.openSessions.get(login.username)).toBe(2);
      await pools.send(a, { host: '127.0.0.1', port: alternate.port }, envelope, message());
      await until(() => primary.openSessions.get(login.username) === 0, 'the primary pool’s idle connections closed');
      expect(alternate.openSessions.get(login.username)).toBe(1);
      await pools.closeAccount(a.key);
      // our side of the socket is closed: the upstream has ended the session (its onClose runs a tick later)
      await until(() => alternate.openSessions.get(login.username) === 0, 'the alternate’s session ended', 1_000);
      expect(await pools.closeAccount(a.key)).toEqual([]);
    } finally {
      pools.closeAll();
      await primary.close();
      await alternate.close();
    }
  });
});
