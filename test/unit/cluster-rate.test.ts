import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../../src/cluster/cluster.js';
import { Secret } from '../../src/config/secret.js';
import { SharedRate } from '../../src/delivery/shared-rate.js';
import { accountFor, type Account } from '../../src/config/account.js';
import { AccountBook } from '../../src/delivery/accounts.js';
import { FailoverRegistry, Lane } from '../../src/delivery/lane.js';
import { RateWindow } from '../../src/delivery/rate-limit.js';
import { snapshotOf } from './helpers.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { ManualClock } from './manual-clock.js';

const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);
const ACCOUNT = 'm365/relay@acme.example';
const RATE = { count: 20, windowMs: 60_000 };

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

let prefixes = 0;

/** Three replicas (Cluster objects, one process) on one manual clock, each with its own window object for the account. */
async function replicas(n = 3) {
  const clock = new ManualClock(T0);
  const keyPrefix = `rate${process.pid}-${++prefixes}`;
  const clusters = ['a', 'b', 'c'].slice(0, n).map(
    (nodeId) => new Cluster({ config: { url: new Secret(redis.url, 'inline'), keyPrefix, nodeId, leaseTtlMs: 60_000 }, logger: pino({ level: 'silent' }), configVersion: () => 'v1', queueDepth: () => 0, startedAt: new Date(T0), now: () => clock.now(), commandTimeoutMs: 10_000 }),
  );
  // the replicas' clocks agree exactly (the shared clock is the manual one): the test moves time, not Redis' TIME
  for (const c of clusters) c.store.syncClock = async () => undefined;
  for (const c of clusters) await c.start();
  for (const c of clusters) await c.registry.heartbeat();
  const windows = clusters.map((c) => new SharedRate(RATE, ACCOUNT, c));
  const started: { replica: number; at: number }[] = [];
  /** Slots of sends still in flight (`inFlight` mode): settled by the test. */
  const open: { settle(): void }[] = [];
  let inFlight = false;
  let asked = 0;
  /** `perReplica` sends on each replica, started at once; each records when its slot came and is answered at once (unless `inFlight`). */
  const sendOn = (replica: number, n: number) => {
    for (let i = 0; i < n; i++) {
      asked++;
      void windows[replica]!.acquire(clock).then((slot) => {
        started.push({ replica, at: clusters[replica]!.store.now() });
        if (inFlight) open.push(slot);
        else slot.settle();
      });
    }
  };
  const send = (perReplica: number) => windows.forEach((_, replica) => sendOn(replica, perReplica));
  /** Every send has either started or waits on a timer of the clock (its answer from Redis is in). */
  const settled = async () => {
    const deadline = Date.now() + 5_000;
    while (started.length + clock.pending !== asked) {
      if (Date.now() > deadline) throw new Error(`not settled: ${started.length} started, ${clock.pending} waiting, ${asked} asked`);
      await new Promise((resolve) => setImmediate(resolve));
    }
    // each replica's settle() went before this on its connection: Redis has them all
    await Promise.all(clusters.map((c) => c.store.run((redis) => redis.ping())));
    return started.length;
  };
  const advance = async (ms: number) => {
    await clock.advance(ms);
    return settled();
  };
  const stop = () => Promise.all(clusters.map((c) => c.stop()));
  const holdReplies = (on: boolean) => (inFlight = on);
  return { clock, clusters, windows, started, open, holdReplies, send, sendOn, settled, advance, stop };
}

/** The most sends that started within any `windowMs`. */
function peak(started: readonly { at: number }[], windowMs: number): number {
  const at = started.map((s) => s.at).sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < at.length; i++) {
    while (at[i]! - at[j]! >= windowMs) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

const waitFor = async (what: () => boolean, label: string) => {
  const deadline = Date.now() + 10_000;
  while (!what()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
};

describe('an account rate shared by three replicas through Redis (rate: 20/min)', () => {
  it('at most 20 sends of the account in any minute, whichever replica starts them', async () => {
    const r = await replicas();
    r.send(15); // 45 sends wanted at once, 15 on each replica
    expect(await r.settled()).toBe(20);
    expect(new Set(r.started.map((s) => s.replica)).size).toBeGreaterThan(1);
    expect(await r.advance(59_999)).toBe(20);
    expect(await r.advance(1)).toBe(40);
    expect(await r.advance(60_000)).toBe(45);
    expect(peak(r.started, 60_000)).toBe(20);
    await r.stop();
  });

  it('a send counts until a minute after the upstream answered it: a slow one keeps its slot, so the upstream never counts more than 20 arrivals in a minute', async () => {
    const r = await replicas();
    r.holdReplies(true);
    r.send(10); // 30 wanted; 20 start and stay in flight
    expect(await r.settled()).toBe(20);
    // a minute after they started they are still in flight: they could all arrive now, so nothing starts
    for (let i = 0; i < 70; i++) await r.advance(1_000);
    expect(r.started).toHaveLength(20);
    r.holdReplies(false);
    for (const slot of r.open.splice(0)) slot.settle(); // answered at T0 + 70 s
    // in steps of a second, as time would pass
    for (let i = 0; i < 120; i++) await r.advance(1_000);
    expect(r.started).toHaveLength(30);
    // their arrivals may have been as late as T0 + 70 s: the next sends start a minute after that
    expect(Math.min(...r.started.slice(20).map((x) => x.at))).toBeGreaterThanOrEqual(T0 + 130_000);
    await r.stop();
  });

  it('a wait counts from when Redis was asked: an answer that comes late does not put the next try later', async () => {
    const r = await replicas(1);
    r.send(20);
    expect(await r.settled()).toBe(20);
    // the 21st asks at T0; its answer (wait a minute) is held back while half a minute passes
    const store = r.clusters[0]!.store;
    const run = store.run.bind(store);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    store.run = async (fn) => {
      const reply = await run(fn);
      await held;
      return reply;
    };
    r.send(1);
    await r.clock.advance(30_000);
    release();
    expect(await r.settled()).toBe(20);
    expect(await r.advance(29_999)).toBe(20);
    expect(await r.advance(1)).toBe(21);
    expect(r.started[20]!.at).toBe(T0 + 60_000);
    await r.stop();
  });

  it('the window key expires after its window: nothing is left in Redis', async () => {
    const r = await replicas(1);
    r.send(1);
    expect(await r.settled()).toBe(1);
    const ttl = await r.clusters[0]!.store.redis.pttl(r.clusters[0]!.store.key('rate', ACCOUNT));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(120_000); // two windows: a send in flight counts for one beyond its start
    await r.stop();
  });

  it('Redis killed: each replica keeps to its share (20 / 3 = 6 a window), nothing throws; Redis back: the sends made alone count in the shared window', async () => {
    const r = await replicas();
    await redis.kill();
    await waitFor(() => r.clusters.every((c) => !c.up), 'every replica to see Redis down');
    r.send(10);
    expect(await r.settled()).toBe(18);
    for (const replica of [0, 1, 2]) expect(r.started.filter((s) => s.replica === replica)).toHaveLength(6);

    await redis.restart();
    await waitFor(() => r.clusters.every((c) => c.up), 'every replica to see Redis again');
    // the 12 still wait on local timers; a send on each replica in turn: each puts the 6 it made alone in first
    for (const replica of [0, 1, 2]) {
      r.sendOn(replica, 1);
      await r.settled();
    }
    expect(r.started).toHaveLength(20);
    expect(r.started.slice(18).map((s) => s.replica)).toEqual([0, 1]);
    r.send(1);
    expect(await r.advance(1_000)).toBe(20);
    expect(await r.advance(61_000)).toBe(36);
    expect(peak(r.started, 60_000)).toBe(20);
    await r.stop();
  });

  it('the lane picks the shared window only with cluster:, and none without rate', async () => {
    const r = await replicas(1);
    const account = (extra: string) => accountFor(snapshotOf(`servers:\n  - name: m365\n    host: h\n    username: relay@acme.example\n    password: pw\n${extra}`), undefined) as Account;
    const lane = (cluster?: Cluster) => new Lane(ACCOUNT, new FailoverRegistry(), new AccountBook(pino({ level: 'silent' }), undefined, cluster).of(ACCOUNT));
    expect(lane(r.clusters[0]).rate(account('    rate: 20/min\n'))).toBeInstanceOf(SharedRate);
    expect(lane().rate(account('    rate: 20/min\n'))).toBeInstanceOf(RateWindow);
    expect(lane(r.clusters[0]).rate(account(''))).toBeUndefined();
    await r.stop();
  });
});
