import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { compiledCli, runProcess } from '../support/cli.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { channelFor, localPorts, messagesOf, mostInWindow, passwordServer, sendAll, startReplicas, subjectOf, until, UPSTREAM_ACCOUNT, type Replica, type ReplicaSet } from '../support/replicas.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';

const LEASE_TTL_MS = 2_000;
/**
 * While Redis is away a replica keeps its share in a local window, which counts sends when they
 * start, as one relay does (the shared window counts them until their reply): its check is on
 * when each transaction began at the upstream (test/support/upstream.ts startedAt), a window less
 * this allowance for the time from the relay's decision to there on a loaded machine.
 */
const PATH_ALLOWANCE_MS = 200;

/** A replica killed with -9, and Redis itself gone mid-load: nothing lost, the limits come back. */
describe('three replicas when one of them or Redis dies (real processes)', () => {
  let cli: string;
  const cleanups: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    cli = await compiledCli(mkdtempSync(join(tmpdir(), 'sendas-cluster-cli-')));
  }, 120_000);
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  const track = <T extends { stop?: () => Promise<unknown>; close?: () => Promise<unknown> }>(x: T): T => {
    cleanups.push(() => (x.stop ?? x.close)!.call(x));
    return x;
  };
  const received = (upstream: TestUpstream, login: string) => new Set(messagesOf(upstream, login).map(subjectOf));

  it('kill -9 of one replica mid-load: its connection slots free within the lease TTL, its queue is delivered after the restart, nothing lost', async () => {
    const login = 'pooled@acme.example';
    const redis = track(await startRedis());
    const upstream = track(await startTestUpstream({ accounts: [UPSTREAM_ACCOUNT('pooled')], replyDelayMs: () => 200 }));
    const set: ReplicaSet = track(
      await startReplicas({ count: 3, redisUrl: redis.url, prefix: 'kill', cli, leaseTtl: `${LEASE_TTL_MS}ms`, servers: passwordServer('pooled', upstream.port, '    default: true\n    connections: 2\n'), channels: channelFor('pooled') }),
    );
    const [victim, ...others] = set.replicas as [Replica, ...Replica[]];
    const subjects = set.replicas.map((r) => Array.from({ length: 12 }, (_, i) => `kill-${r.node}-${i}`));
    const openPorts = () => {
      const open = new Set<number>();
      for (const c of upstream.sessionTimeline) if (c.login === login) c.change === 1 ? open.add(c.remotePort) : open.delete(c.remotePort);
      return open;
    };
    const victimHolds = (ports: Set<number>) => [...openPorts()].filter((p) => ports.has(p)).length;

    // the victim alone has mail: it takes both of the account's connections (leases)
    const accepted = await sendAll(victim.proc.port, login, subjects[0]!);
    expect(accepted).toHaveLength(12);
    let victimPorts = new Set<number>();
    await until(
      () => {
        victimPorts = localPorts(victim.proc.child.pid!);
        return victimHolds(victimPorts) === 2;
      },
      10_000,
      () => `the victim holds ${victimHolds(victimPorts)} of 2 sessions`,
    );
    const killedAt = performance.now();
    victim.proc.child.kill('SIGKILL');
    await victim.proc.stop('SIGKILL');

    // mail for the two others: the victim's leases hold until they run out, then the others have the whole account
    const sending = Promise.all(others.map((r, i) => sendAll(r.proc.port, login, subjects[i + 1]!)));
    await until(
      () => victimHolds(victimPorts) === 0 && (upstream.openSessions.get(login) ?? 0) === 2,
      LEASE_TTL_MS + 2_000,
      () => `the others hold ${upstream.openSessions.get(login) ?? 0} of 2 sessions, ${messagesOf(upstream, login).length} delivered`,
    );
    const freedMs = performance.now() - killedAt;
    expect(freedMs).toBeLessThan(LEASE_TTL_MS + 2_000);
    accepted.push(...(await sending).flat());
    expect(accepted).toHaveLength(36);

    // the others deliver theirs; the victim, started again on its queue, delivers its own
    await until(() => others.every((_, i) => subjects[i + 1]!.every((s) => received(upstream, login).has(s))), 20_000, 'the other replicas did not deliver their messages');
    await set.restart(victim);
    expect(victim.proc.lines.find((l) => l.includes('"msg":"picked up'))).toMatch(/"pending":[1-9]/);
    await until(() => accepted.every((s) => received(upstream, login).has(s)), 20_000, () => `missing: ${accepted.filter((s) => !received(upstream, login).has(s)).join(', ')}`);
    expect(upstream.peakSessions.get(login)).toBeLessThanOrEqual(2);
  }, 60_000);

  it('Redis killed mid-load: mail keeps flowing within each replica’s share, nothing lost; Redis back: the registry lists all nodes and the limit is shared again', async () => {
    const login = 'rated@acme.example';
    const redis: TestRedis = track(await startRedis());
    const upstream = track(await startTestUpstream({ accounts: [UPSTREAM_ACCOUNT('rated')] }));
    const set: ReplicaSet = track(await startReplicas({ count: 3, redisUrl: redis.url, prefix: 'outage', cli, servers: passwordServer('rated', upstream.port, '    default: true\n    rate: 9/s\n'), channels: channelFor('rated') }));
    const [r1] = set.replicas as [Replica, ...Replica[]];
    type ClusterView = { redis?: string; replicas?: number; nodes?: { node: string }[] };
    const cluster = async (r: Replica) => ((await set.status(r)).cluster ?? {}) as ClusterView;
    // each replica must know there are three before Redis goes: that is what it divides the limit by
    for (const r of set.replicas) await until(async () => (await cluster(r)).replicas === 3, 5_000, () => `${r.node} does not see 3 replicas in /status cluster`);

    const phase1 = set.replicas.map((r) => Array.from({ length: 4 }, (_, i) => `outage-${r.node}-${i}`));
    const sending = Promise.all(set.replicas.map((r, i) => sendAll(r.proc.port, login, phase1[i]!)));
    await until(() => messagesOf(upstream, login).length >= 3, 10_000, 'nothing delivered before the outage');
    const linesAtKill = set.replicas.map((r) => r.proc.lines.length);
    await redis.kill();
    const accepted1 = (await sending).flat();
    expect(accepted1).toHaveLength(12);
    for (const r of set.replicas) await r.proc.waitForLog((l) => typeof l.msg === 'string' && l.msg.includes('Redis does not answer'), { after: linesAtKill[set.replicas.indexOf(r)]! });
    await until(() => accepted1.every((s) => received(upstream, login).has(s)), 15_000, () => `lost in the outage: ${accepted1.filter((s) => !received(upstream, login).has(s)).join(', ')}`);

    // one replica alone while Redis is away: its share, 9 / 3 replicas = 3 a second
    const alone = Array.from({ length: 9 }, (_, i) => `outage-alone-${i}`);
    expect(await sendAll(r1.proc.port, login, alone)).toHaveLength(9);
    await until(() => alone.every((s) => received(upstream, login).has(s)), 15_000, 'the messages sent during the outage were not delivered');
    const aloneTimes = messagesOf(upstream, login).filter((m) => alone.includes(subjectOf(m))).map((m) => m.startedAt!);
    expect(mostInWindow(aloneTimes, 1000 - PATH_ALLOWANCE_MS)).toBeLessThanOrEqual(3);
    expect((await cluster(r1)).redis).toBe('down');
    // warned once per outage, not at every reconnect attempt
    for (const [i, r] of set.replicas.entries()) expect(r.proc.lines.slice(linesAtKill[i]).filter((l) => l.includes('Redis does not answer'))).toHaveLength(1);

    const linesAtRestart = set.replicas.map((r) => r.proc.lines.length);
    await redis.restart();
    for (const [i, r] of set.replicas.entries()) await r.proc.waitForLog((l) => typeof l.msg === 'string' && l.msg.includes('Redis answers again'), { after: linesAtRestart[i]!, timeoutMs: 10_000 });
    await until(
      async () => {
        const c = await cluster(r1);
        return c.redis === 'up' && (c.nodes ?? []).map((n) => n.node).sort().join() === 'r1,r2,r3';
      },
      5_000,
      'r1 /status does not list r1, r2, r3 with Redis up',
    );
    // and ops see them from Redis itself
    const table = await runProcess(process.execPath, [cli, 'status', '--cluster', '--config', r1.file], { cwd: r1.dir, env: { PATH: process.env.PATH } });
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout.split('\n')[0]).toBe(`Redis 127.0.0.1:${redis.port} up, prefix outage: 3 replicas in the registry`);
    expect(table.stdout.split('\n').slice(2, 5).map((l) => l.split(/\s+/)[0])).toEqual(['r1', 'r2', 'r3']);

    // shared again: the one replica may use the whole limit, more than its share while Redis was away
    const after = Array.from({ length: 9 }, (_, i) => `outage-after-${i}`);
    expect(await sendAll(r1.proc.port, login, after)).toHaveLength(9);
    await until(() => after.every((s) => received(upstream, login).has(s)), 15_000, 'the messages sent after the outage were not delivered');
    // the shared window again: exact as the upstream counts, by the 250s it gave
    const afterTimes = messagesOf(upstream, login).filter((m) => after.includes(subjectOf(m))).map((m) => m.repliedAt!);
    expect(mostInWindow(afterTimes, 1000)).toBeGreaterThan(3);
    expect(mostInWindow(afterTimes, 1000)).toBeLessThanOrEqual(9);
  }, 60_000);
});
