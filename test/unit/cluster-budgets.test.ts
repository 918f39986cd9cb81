import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../../src/cluster/cluster.js';
import { accountFor, type Account } from '../../src/config/account.js';
import { Secret } from '../../src/config/secret.js';
import { AccountBook, type AccountState, type Reservation, type Reserved } from '../../src/delivery/accounts.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { snapshotOf } from './helpers.js';
import { ManualClock } from './manual-clock.js';

const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);
const KEY = 'm365/relay@acme.example';
const account = accountFor(snapshotOf('servers:\n  - name: m365\n    host: h\n    username: relay@acme.example\n    password: pw\n    daily: {recipients: 10}\n'), undefined) as Account;
const one = { messages: 1, recipients: 1 };

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

let prefixes = 0;

/** Three replicas in one process: each its Cluster, its account book and its own state_dir, on one manual clock. */
async function replicas() {
  const clock = new ManualClock(T0);
  const keyPrefix = `budget${process.pid}-${++prefixes}`;
  const make = async (nodeId: string, stateDir = mkdtempSync(join(tmpdir(), `sendas-cb-${nodeId}-`))) => {
    const cluster = new Cluster({ config: { url: new Secret(redis.url, 'inline'), keyPrefix, nodeId, leaseTtlMs: 60_000 }, logger: pino({ level: 'silent' }), configVersion: () => 'v1', queueDepth: () => 0, startedAt: new Date(T0), now: () => clock.now(), commandTimeoutMs: 10_000 });
    await cluster.start();
    const book = new AccountBook(pino({ level: 'silent' }), clock, cluster);
    await book.load(stateDir, clock.now());
    return { cluster, book, stateDir, state: book.of(KEY) };
  };
  const all = [await make('a'), await make('b'), await make('c')];
  for (const r of all) await r.cluster.registry.heartbeat();
  const total = async () => Number(await all[1]!.cluster.store.redis.hget(all[1]!.cluster.store.key('budget', KEY), 'r'));
  const stop = () => Promise.all(all.map((r) => r.cluster.stop()));
  return { clock, all, make, total, stop };
}

const reserve = (r: { state: AccountState }, now: number) => Promise.resolve(r.state.reserve(account, one, now));
const counted = (x: Reserved) => x !== undefined && 'reservation' in x;
const message = (x: Reserved) => (x && 'error' in x ? x.error.message : undefined);
const own = (r: { state: AccountState }) => r.state.buckets.reduce((n, b) => n + b.recipients, 0);

const waitFor = async (what: () => boolean | Promise<boolean>, label: string) => {
  const deadline = Date.now() + 10_000;
  while (!(await what())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
};

describe('daily budgets counted by three replicas together in Redis (daily: {recipients: 10})', () => {
  it('the tenth recipient is the last, whichever replica asks; the refusal is the single relay’s 451 4.7.0; /status shows the shared use', async () => {
    const r = await replicas();
    const results: Reserved[] = [];
    for (let i = 0; i < 12; i++) results.push(await reserve(r.all[i % 3]!, T0 + i * 1000));
    expect(results.filter(counted)).toHaveLength(10);
    expect(results.slice(10).map(message)).toEqual([
      'account relay@acme.example (server m365) has used its 10 recipients per 24 h (10 counted); try again after 2026-01-11 12:02 UTC',
      'account relay@acme.example (server m365) has used its 10 recipients per 24 h (10 counted); try again after 2026-01-11 12:02 UTC',
    ]);
    const refused = results[10] as { error: { kind: string; status: unknown }; freeAt: number };
    expect(refused.error).toMatchObject({ kind: 'quota', status: { code: 451, enhanced: '4.7.0' } });
    expect(refused.freeAt).toBe(T0 + 2 * 60_000 + 86_400_000);
    // each replica's own count is its part; the use shown is everyone's
    expect(r.all.map(own)).toEqual([4, 3, 3]);
    for (const x of r.all) expect(x.state.use(T0 + 12_000)).toEqual([{ budget: 'recipients', used: 10, limit: 10 }]);
    // the replica that was refused knows without asking Redis again (before taking a rate slot)
    expect(r.all[1]!.state.room(account, one, T0 + 13_000)?.error.message).toContain('(10 counted)');
    // the state_dir file keeps the replica's own part
    await r.all[0]!.state.commit();
    expect(JSON.parse(readFileSync(join(r.all[0]!.stateDir, 'budgets', `${encodeURIComponent(KEY)}.json`), 'utf8')).buckets).toEqual([[T0, 4, 4]]);
    // the keys go when their last bucket has
    const ttl = await r.all[0]!.cluster.store.redis.pttl(r.all[0]!.cluster.store.key('budget', KEY));
    expect(ttl).toBeGreaterThan(86_400_000);
    expect(ttl).toBeLessThanOrEqual(86_400_000 + 3 * 60_000);
    // a day and two minutes later the window has room again
    expect(counted(await reserve(r.all[2]!, T0 + 2 * 60_000 + 86_400_000))).toBe(true);
    await r.stop();
  });

  it('a give-back frees the room for every replica; passthrough (admit) counts in the same place', async () => {
    const r = await replicas();
    const mine: Reserved[] = [];
    for (let i = 0; i < 10; i++) mine.push(await reserve(r.all[i % 3]!, T0));
    expect(mine.every(counted)).toBe(true);
    expect(await r.all[2]!.book.admit(account, 1)).toMatchObject({ kind: 'quota', message: expect.stringContaining('has used its 10 recipients per 24 h (10 counted)') });
    r.all[1]!.state.giveBack((mine[1] as { reservation: Reservation }).reservation);
    await waitFor(async () => (await r.total()) === 9, 'the give-back in Redis');
    const ticket = await r.all[2]!.book.admit(account, 1);
    expect(ticket).not.toBeInstanceOf(Error);
    expect(await r.total()).toBe(10);
    expect(r.all.map(own)).toEqual([4, 2, 4]);
    await r.stop();
  });

  it('Redis killed: each replica keeps to its own count against its share (10 / 3 = 3), nothing throws; Redis back: each one’s count is put back, none twice', async () => {
    const r = await replicas();
    const [a, b, c] = r.all as [(typeof r.all)[0], (typeof r.all)[0], (typeof r.all)[0]];
    expect(counted(await reserve(a, T0))).toBe(true);
    expect(counted(await reserve(a, T0))).toBe(true);

    await redis.kill();
    await waitFor(() => r.all.every((x) => !x.cluster.up), 'every replica to see Redis down');
    const alone = async (x: typeof a) => {
      const out: Reserved[] = [];
      for (let i = 0; i < 4; i++) out.push(await reserve(x, T0 + 60_000));
      return out;
    };
    const [ra, rb, rc] = [await alone(a), await alone(b), await alone(c)];
    expect([ra, rb, rc].map((x) => x.filter(counted).length)).toEqual([1, 3, 3]);
    expect(message(rb[3])).toBe("account relay@acme.example (server m365) has used its 3 recipients per 24 h (this relay's share of 10 while the cluster's Redis is away) (3 counted); try again after 2026-01-11 12:03 UTC");
    expect(a.state.room(account, one, T0 + 60_000)?.error.message).toContain("this relay's share of 10");
    expect(r.all.map(own)).toEqual([3, 3, 3]);
    for (const x of r.all) await x.state.commit();

    // Redis comes back empty (nothing persisted): every replica puts its own count back as its part
    await redis.restart();
    await waitFor(() => r.all.every((x) => x.cluster.up), 'every replica to see Redis again');
    await waitFor(async () => (await r.total()) === 9, 'the three counts in Redis');
    expect(counted(await reserve(b, T0 + 120_000))).toBe(true);
    expect(message(await reserve(c, T0 + 120_000))).toContain('has used its 10 recipients per 24 h (10 counted)');
    expect(c.state.use(T0 + 120_000)).toEqual([{ budget: 'recipients', used: 10, limit: 10 }]);

    // putting a count back again changes nothing, nor does a replica's restart on the same state_dir
    await a.state.syncBudgets(T0 + 120_000);
    expect(await r.total()).toBe(10);
    await a.cluster.stop();
    const again = await r.make('a', a.stateDir);
    await again.state.syncBudgets(T0 + 120_000);
    expect(await r.total()).toBe(10);
    expect(message(await reserve(again, T0 + 120_000))).toContain('(10 counted)');
    await Promise.all([b.cluster.stop(), c.cluster.stop(), again.cluster.stop()]);
  });
});
