import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Account } from '../../src/config/account.js';
import type { QueueConfig, ServerConfig } from '../../src/config/types.js';
import { applyBatchOutcome, applyUnusableAccount, concludeAttempt } from '../../src/delivery/decide.js';
import { FailoverState, type Route } from '../../src/delivery/failover.js';
import { QueueRunner } from '../../src/delivery/queue-runner.js';
import { classifyUpstreamError } from '../../src/errors/classify.js';
import { RelayError } from '../../src/errors/relay-error.js';
import type { QueueEntryMeta } from '../../src/queue/entry.js';
import type { QueueStore } from '../../src/queue/store.js';
import type { SendOutcome } from '../../src/transport/send.js';
import { BASE_YAML, queueEntry, snapshotOf } from './helpers.js';
import { ManualClock } from './manual-clock.js';

const SEC = 1000;
const MIN = 60 * SEC;
const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);
const ctx = { serverName: 'main', host: 'smtp.acme.example', port: 587, login: 'relay@acme.example', passwordPath: 'servers[0].password' };

const sent = (upstreamReply = '250 2.0.0 OK'): SendOutcome => ({ ok: true, accepted: ['a@example.net'], refused: [], upstreamReply });
const failed = (raw: object): SendOutcome => ({ ok: false, error: classifyUpstreamError(raw, ctx) });
const REFUSED = { code: 'ESOCKET', message: 'connect ECONNREFUSED 127.0.0.1:587', originalCode: 'ECONNREFUSED', command: 'CONN' };
const DROPPED = { code: 'ECONNECTION', message: 'Connection closed unexpectedly', command: 'CONN' };

function entry(id: string, recipients = ['a@example.net'], receivedAt = T0): QueueEntryMeta {
  const pending = recipients.map((address) => ({ address, status: 'pending' as const, attempts: 0 }));
  return queueEntry(pending, { id, receivedAt: new Date(receivedAt).toISOString(), subject: id, size: 100, attempts: 0 });
}

const server = () => snapshotOf().servers.find((s) => s.name === 'main')!;
function withAlternate(cooldownMs = 30 * SEC): ServerConfig {
  return { ...server(), alternate: { host: 'smtp2.acme.example', port: 587, cooldownMs } };
}

describe('failover keeps its cool-down (FailoverState.afterSend)', () => {
  const PRIMARY: Route = { host: 'smtp.acme.example', port: 587, alternate: false };

  it('a send begun on the primary before the failover, succeeding after it, does not end the failover', () => {
    const f = new FailoverState(withAlternate());
    const earlyStart = T0 - 10;
    // another send fails to connect: fail over
    expect(f.afterSend(PRIMARY, failed(REFUSED), T0 - 5, T0)).toBe('use-alternate');
    // the early one was on a connection opened before: its success says nothing about the primary now
    expect(f.afterSend(PRIMARY, sent(), earlyStart, T0 + 46)).toBeUndefined();
    expect(f.usingAlternate).toBe(true);
    expect(f.routeAt(T0 + 46).alternate).toBe(true);
    expect(f.routeAt(T0 + 30 * SEC - 1).alternate).toBe(true);
  });

  it('a send begun once the cool-down has passed that succeeds on the primary ends it', () => {
    const f = new FailoverState(withAlternate());
    f.afterSend(PRIMARY, failed(REFUSED), T0, T0);
    const probe = T0 + 30 * SEC;
    expect(f.routeAt(probe)).toEqual(PRIMARY);
    expect(f.afterSend(PRIMARY, sent(), probe, probe + 20)).toBe('back-to-primary');
    expect(f.usingAlternate).toBe(false);
  });

  it('a probe begun after the cool-down loses to a newer failure', () => {
    const f = new FailoverState(withAlternate());
    f.afterSend(PRIMARY, failed(REFUSED), T0, T0);
    const probe = T0 + 30 * SEC;
    f.afterSend(PRIMARY, failed(REFUSED), probe + 1, probe + 5);
    expect(f.afterSend(PRIMARY, sent(), probe, probe + 10)).toBeUndefined();
    expect(f.routeAt(probe + 10).alternate).toBe(true);
  });

  it('a dropped connection, a refusal or a send on the alternate change nothing', () => {
    const f = new FailoverState(withAlternate());
    expect(f.afterSend(PRIMARY, failed(DROPPED), T0, T0)).toBeUndefined();
    expect(f.afterSend(PRIMARY, failed({ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 550, response: '550 5.1.1 No such user' }), T0, T0)).toBeUndefined();
    expect(f.usingAlternate).toBe(false);
    expect(f.afterSend(f.alternate()!, failed(REFUSED), T0, T0)).toBeUndefined();
    expect(f.usingAlternate).toBe(false);
  });

  it('without an alternate nothing fails over', () => {
    const f = new FailoverState(server());
    expect(f.afterSend(PRIMARY, failed(REFUSED), T0, T0)).toBeUndefined();
    expect(f.routeAt(T0)).toEqual(PRIMARY);
  });
});

describe('decisions on an entry (decide.ts)', () => {
  const QUEUE: QueueConfig = { dir: '/unused', retryMs: [MIN, 5 * MIN], maxAgeMs: 60 * MIN, notify: undefined };

  it('a batch delivered, partly refused, deferred or failed', () => {
    const meta = entry('E1', ['a@example.net', 'B@example.net', 'c@example.net']);
    const [a, b, c] = meta.recipients;
    const refusal = classifyUpstreamError({ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 550, response: '550 5.1.1 No such user', recipient: 'b@example.net' }, ctx);
    expect(applyBatchOutcome(meta, [a!, b!], { ok: true, accepted: ['a@example.net'], refused: [{ recipient: 'b@example.net', error: refusal }], upstreamReply: '250 OK' }, 'smtp.acme.example', T0)).toBe('partial');
    expect([a!.status, a!.deliveredAt, a!.upstreamReply]).toEqual(['delivered', new Date(T0).toISOString(), '250 OK']);
    expect([b!.status, b!.lastError?.enhanced, b!.lastError?.host]).toEqual(['failed', '5.1.1', 'smtp.acme.example']);
    expect(meta.lastError?.reason).toContain('refused recipient b@example.net');
    expect(applyBatchOutcome(meta, [c!], failed(DROPPED), 'smtp.acme.example', T0 + 1)).toBe('deferred');
    expect([c!.status, c!.lastError?.kind, c!.lastError?.enhanced]).toEqual(['pending', 'network', '4.4.2']);
    expect(applyBatchOutcome(meta, [c!], failed({ code: 'EMESSAGE', command: 'DATA', responseCode: 554, response: '554 5.6.0 Content rejected' }), 'smtp.acme.example', T0 + 2)).toBe('failed');
    expect(c!.status).toBe('failed');
  });

  it('an account that cannot be used waits with the temporary form of its reason', () => {
    const meta = entry('E2');
    const err = new RelayError('config', { code: 554, enhanced: '5.3.5' }, 'channel "support" has no password');
    const deferred = applyUnusableAccount(meta, err, T0);
    expect([deferred.kind, deferred.status.code, deferred.status.enhanced, deferred.message]).toEqual(['config', 451, '4.3.5', err.message]);
    expect(meta.recipients[0]).toMatchObject({ status: 'pending', lastError: { code: 451, enhanced: '4.3.5', at: new Date(T0).toISOString() } });
  });

  it('conclusion: the next attempt on the schedule, then done with the expired ones failed', () => {
    const meta = entry('E3');
    meta.attempts = 1;
    applyBatchOutcome(meta, meta.recipients, failed(DROPPED), 'h', T0);
    expect(concludeAttempt(meta, T0, QUEUE)).toEqual({ kind: 'retry', at: T0 + MIN });
    expect(meta.nextAttemptAt).toBe(new Date(T0 + MIN).toISOString());
    meta.attempts = 7;
    const done = concludeAttempt(meta, T0 + 60 * MIN, QUEUE);
    expect(done).toMatchObject({ kind: 'done', gaveUpAfter: '1h 0m and 7 attempts' });
    expect(meta.recipients[0]!.lastError?.reason).toMatch(/^gave up after 1h 0m and 7 attempts: Connection lost with upstream main/);
    expect(meta.failedAt).toBe(new Date(T0 + 60 * MIN).toISOString());
  });
});

/** A QueueRunner on a manual clock, with an in-memory store and a scripted transport. */
function harness(yamlExtra: string, script: (meta: QueueEntryMeta, route: Route, n: number) => Promise<SendOutcome> | SendOutcome, yaml = BASE_YAML, storeOverrides: Partial<QueueStore> = {}) {
  const clock = new ManualClock(T0);
  const snapshot = snapshotOf(yaml, yamlExtra);
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(...chunk.toString().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)), done()) }));
  const sends: { id: string; route: Route; at: number }[] = [];
  /** The servers whose primary pools the runner told the transport to renew. */
  const renewed: string[] = [];
  const store = { list: async () => [], update: async () => undefined, remove: async () => undefined, moveToFailed: async () => undefined, takeMessage: () => undefined, ...storeOverrides } as unknown as QueueStore;
  const runner = new QueueRunner({
    store,
    getSnapshot: () => snapshot,
    logger,
    writeNotice: async () => undefined,
    clock,
    transport: {
      send: async (meta, _account: Account, _env, route) => (sends.push({ id: meta.id, route, at: clock.now() }), script(meta, route, sends.length)),
      primaryFailed: (server) => void renewed.push(server),
    },
  });
  return { clock, runner, lines, sends, snapshot, renewed };
}

describe('QueueRunner on an injected clock (no real sleeps)', () => {
  it('retries on the schedule: 451, 451, then 250 at exactly +300 ms and +600 ms more', async () => {
    const greylisted = failed({ code: 'EMESSAGE', command: 'DATA', responseCode: 451, response: '451 4.3.0 Greylisted, try again' });
    const h = harness('queue:\n  retry: [300ms, 600ms]\n', (_m, _r, n) => (n <= 2 ? greylisted : sent()));
    await h.runner.start();
    h.runner.enqueue(entry('R1'));
    await h.clock.advance(0);
    await h.clock.advance(299);
    expect(h.sends.map((s) => s.at - T0)).toEqual([0]);
    await h.clock.advance(1);
    await h.clock.advance(599);
    expect(h.sends.map((s) => s.at - T0)).toEqual([0, 300]);
    await h.clock.advance(1);
    expect(h.sends.map((s) => s.at - T0)).toEqual([0, 300, 900]);
    expect(h.lines.filter((l) => l.result).map((l) => [l.result, l.attempt])).toEqual([
      ['deferred', 1],
      ['deferred', 2],
      ['delivered', 3],
    ]);
    expect(h.runner.size).toBe(0);
  });

  it('an entry whose new state could not be written (disk full) is tried again on queue.retry, not in a fixed minute', async () => {
    const greylisted = failed({ code: 'EMESSAGE', command: 'DATA', responseCode: 451, response: '451 4.3.0 Greylisted, try again' });
    let writes = 0;
    const update = async () => {
      if (++writes === 1) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    };
    const h = harness('queue:\n  retry: [300ms, 600ms]\n', (_m, _r, n) => (n === 1 ? greylisted : sent()), BASE_YAML, { update });
    await h.runner.start();
    h.runner.enqueue(entry('W1'));
    await h.clock.advance(0);
    expect(h.lines.find((l) => l.msg?.toString().startsWith('queue attempt failed unexpectedly'))).toMatchObject({ retryInMs: 300, err: { code: 'ENOSPC' } });
    await h.clock.advance(299);
    expect(h.sends.map((s) => s.at - T0)).toEqual([0]);
    await h.clock.advance(1);
    expect(h.sends.map((s) => s.at - T0)).toEqual([0, 300]);
    expect(h.runner.size).toBe(0);
  });

  it('fails over, keeps the alternate through the cool-down even when a send begun before ends well on the primary, and goes back after it', async () => {
    let releaseEarly: (o: SendOutcome) => void = () => undefined;
    const primaryUp = { value: false };
    const yaml = BASE_YAML.replace('    host: smtp.acme.example\n', '    host: smtp.acme.example\n    alternate: {host: smtp2.acme.example, cooldown: 30s}\n');
    const h = harness('queue:\n  retry: [1h]\n', (meta, route) => {
      if (route.alternate) return sent('250 alternate');
      // the first message is on a primary connection that still works; meanwhile new connections are refused
      if (meta.id === 'F1') return new Promise<SendOutcome>((resolve) => (releaseEarly = resolve));
      return primaryUp.value ? sent('250 primary') : failed(REFUSED);
    }, yaml);
    await h.runner.start();
    h.runner.enqueue(entry('F1'));
    await h.clock.advance(0);
    h.runner.enqueue(entry('F2'));
    await h.clock.advance(5);
    expect(h.lines.filter((l) => l.msg === 'primary unreachable: using the alternate')).toHaveLength(1);
    expect(h.sends.filter((s) => s.id === 'F2').map((s) => s.route.alternate)).toEqual([false, true]);
    // the connections opened before are not trusted with the probe: the transport opens new ones
    expect(h.renewed).toEqual(['main']);

    primaryUp.value = true;
    releaseEarly(sent('250 primary, old connection'));
    await h.clock.advance(41);
    expect(h.lines.filter((l) => l.msg === 'primary reachable again: back from the alternate')).toEqual([]);
    h.runner.enqueue(entry('F3'));
    await h.clock.advance(0);
    expect(h.sends.filter((s) => s.id === 'F3').map((s) => s.route.alternate)).toEqual([true]);

    // after the cool-down the next message probes the primary, and traffic is back on it
    await h.clock.advance(30 * SEC);
    h.runner.enqueue(entry('F4'));
    await h.clock.advance(0);
    expect(h.sends.filter((s) => s.id === 'F4').map((s) => s.route.alternate)).toEqual([false]);
    expect(h.lines.filter((l) => l.msg === 'primary reachable again: back from the alternate')).toHaveLength(1);
  });
});
