import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { accountFor, type Account } from '../../src/config/account.js';
import type { ConfigSnapshot } from '../../src/config/types.js';
import { AccountBook, type AccountState } from '../../src/delivery/accounts.js';
import { BACKOFF_MS, HOLD_UNKNOWN_MS, WINDOW_MS, backoffAfter, batchSize, concurrency, expiresAt, holdAfterQuota, record, release, roomFor, usage, type Bucket } from '../../src/delivery/budget.js';
import { QueueRunner } from '../../src/delivery/queue-runner.js';
import { classifyUpstreamError, upstreamRuleFor } from '../../src/errors/classify.js';
import type { QueueEntryMeta } from '../../src/queue/entry.js';
import type { QueueStore } from '../../src/queue/store.js';
import type { SendOutcome } from '../../src/transport/send.js';
import { RelayMetrics } from '../../src/ops/metrics.js';
import { accountStatus } from '../../src/ops/status.js';
import { queueEntry, snapshotOf } from './helpers.js';
import { ManualClock } from './manual-clock.js';

const SEC = 1000;
const MIN = 60 * SEC;
const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);
const ctx = { serverName: 'm365', host: '127.0.0.1', port: 587, login: 'relay@acme.example', passwordPath: 'servers[0].password' };
const THREAD_LIMIT = { code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 432, response: '432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded' };
const QUOTA = { code: 'EMESSAGE', command: 'DATA', responseCode: 554, response: '554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception' };

const server = (yaml: string) => snapshotOf(`servers:\n  - name: m365\n    auth: login\n    username: relay@acme.example\n    password: pw\n${yaml}`).servers[0]!;

describe('provider limits in the presets, each overridable', () => {
  it('office365 SMTP: 3 connections, 30/min, batches of 500, 10000 recipients per 24 h', () => {
    expect(server('    preset: office365\n')).toMatchObject({ connections: 3, rate: { count: 30, windowMs: MIN }, maxRecipients: 500, daily: { messages: undefined, recipients: 10_000 } });
  });

  it('office365 Graph: 4 concurrent requests per mailbox, nothing else', () => {
    const s = snapshotOf('servers:\n  - name: g\n    type: graph\n    preset: office365\n    address: relay@acme.example\n    oauth: {tenant: t, client_id: c, client_secret: s}\n').servers[0]!;
    expect(s).toMatchObject({ connections: 4, rate: undefined, maxRecipients: undefined, daily: undefined });
  });

  it('gmail (Google Workspace numbers): batches of 100, 2000 messages and 10000 recipients per 24 h, the default 5 connections', () => {
    expect(server('    preset: gmail\n    host: smtp.gmail.com\n')).toMatchObject({ connections: 5, rate: undefined, maxRecipients: 100, daily: { messages: 2000, recipients: 10_000 } });
  });

  it('explicit keys win; false turns a limit off; daily is merged key by key', () => {
    expect(server('    preset: office365\n    connections: 2\n    rate: false\n    max_recipients: false\n    daily: false\n')).toMatchObject({ connections: 2, rate: undefined, maxRecipients: undefined, daily: undefined });
    expect(server('    preset: gmail\n    daily: {recipients: 500}\n').daily).toEqual({ messages: 2000, recipients: 500 });
    expect(server('    preset: gmail\n    daily: {messages: false}\n').daily).toEqual({ messages: undefined, recipients: 10_000 });
    expect(server('    host: smtp.acme.example\n')).toMatchObject({ connections: 5, rate: undefined, daily: undefined });
  });

  it('refuses a limit that is not a whole number, with the key path', () => {
    expect(() => server('    host: h\n    connections: 0\n')).toThrow(/servers\[0\]\.connections: must be at least 1/);
    expect(() => server('    host: h\n    daily: {recipients: many}\n')).toThrow(/servers\[0\]\.daily\.recipients: must be a whole number of at least 1, or false/);
    expect(() => server('    host: h\n    daily: {mails: 3}\n')).toThrow(/unknown key "mails"/);
  });
});

describe('the two Microsoft rows of the rule table', () => {
  it('432 4.3.2 sender thread limit: throttled, temporary, back off the account, no failover', () => {
    expect(upstreamRuleFor(THREAD_LIMIT).name).toBe('microsoft: sender thread limit');
    const e = classifyUpstreamError(THREAD_LIMIT, ctx);
    expect([e.kind, e.status, e.temporary, e.unreachable, e.account]).toEqual(['throttled', { code: 451, enhanced: '4.3.2' }, true, false, 'backoff']);
    expect(e.fix).toMatch(/connections: 3/);
  });

  it('554 5.2.0 SubmissionQuotaExceeded: quota, temporary (never a bounce), hold the account', () => {
    const e = classifyUpstreamError(QUOTA, ctx);
    expect([e.kind, e.status, e.temporary, e.unreachable, e.account]).toEqual(['quota', { code: 451, enhanced: '4.2.0' }, true, false, 'hold']);
  });
});

describe('budget decisions (pure, one-minute buckets over a rolling 24 h)', () => {
  const daily = { messages: undefined, recipients: 10 };

  it('counts until 24 h and a minute after the bucket ends, and says when room frees', () => {
    const b: Bucket[] = [];
    record(b, { messages: 1, recipients: 6 }, T0 + 10 * SEC);
    record(b, { messages: 1, recipients: 4 }, T0 + 5 * MIN);
    expect(usage(b, T0 + 6 * MIN)).toEqual({ messages: 2, recipients: 10 });
    expect(roomFor(b, daily, { messages: 1, recipients: 1 }, T0 + 6 * MIN)).toEqual({ ok: false, budget: 'recipients', used: 10, limit: 10, freeAt: T0 + 2 * MIN + WINDOW_MS });
    // 7 more need both buckets gone
    expect(roomFor(b, daily, { messages: 1, recipients: 7 }, T0 + 6 * MIN)).toMatchObject({ freeAt: T0 + 7 * MIN + WINDOW_MS });
    expect(roomFor(b, daily, { messages: 1, recipients: 1 }, T0 + 2 * MIN + WINDOW_MS)).toEqual({ ok: true });
    expect(roomFor(b, daily, { messages: 1, recipients: 6 }, expiresAt(b[0]!))).toEqual({ ok: true });
    expect(roomFor(b, undefined, { messages: 1, recipients: 99 }, T0)).toEqual({ ok: true });
  });

  it('gives back what the upstream did not take, and never goes below zero', () => {
    const b: Bucket[] = [];
    record(b, { messages: 1, recipients: 3 }, T0);
    release(b, { messages: 1, recipients: 5 }, T0 + 30 * SEC);
    expect(usage(b, T0)).toEqual({ messages: 0, recipients: 0 });
  });

  it('batches by the daily recipients budget too, so a message larger than a day still goes', () => {
    expect(batchSize(500, { messages: undefined, recipients: 40 }, 100)).toBe(40);
    expect(batchSize(undefined, undefined, 7)).toBe(7);
  });

  it('backs off one transaction at a time, a wave of refusals counting once for the retry', () => {
    const first = backoffAfter(undefined, 3, 3, T0);
    expect(first.backoff).toMatchObject({ limit: 2, until: T0 + BACKOFF_MS });
    expect(first.retryAt - T0).toBe(5 * SEC);
    const sameWave = backoffAfter(first.backoff, 3, 3, T0 + 100);
    expect([sameWave.backoff.limit, sameWave.retryAt - (T0 + 100)]).toEqual([1, 5 * SEC]);
    const next = backoffAfter(sameWave.backoff, 1, 3, T0 + 6 * SEC);
    expect([next.backoff.limit, next.retryAt - (T0 + 6 * SEC)]).toEqual([1, 10 * SEC]);
    expect(concurrency(3, next.backoff, T0 + 6 * SEC + BACKOFF_MS)).toBe(3);
  });

  it('holds after a quota refusal until the oldest use expires, or an hour when sendas counts nothing', () => {
    const b: Bucket[] = [];
    record(b, { messages: 1, recipients: 1 }, T0);
    expect(holdAfterQuota(b, { messages: undefined, recipients: 100 }, T0 + MIN)).toBe(expiresAt(b[0]!));
    expect(holdAfterQuota(b, undefined, T0 + MIN)).toBe(T0 + MIN + HOLD_UNKNOWN_MS);
  });
});

function entry(id: string, recipients = ['a@example.net']): QueueEntryMeta {
  return queueEntry(
    recipients.map((address) => ({ address, status: 'pending' as const, attempts: 0 })),
    { id, receivedAt: new Date(T0).toISOString(), subject: id, size: 100, attempts: 0, serverName: 'm365', identity: null },
  );
}

/** A QueueRunner on a manual clock with an account book in a temporary state_dir. */
async function harness(limits: string, script: (meta: QueueEntryMeta, n: number) => Promise<SendOutcome> | SendOutcome, stateDir = mkdtempSync(join(tmpdir(), 'sendas-budget-'))) {
  const clock = new ManualClock(T0);
  const snapshot: ConfigSnapshot = snapshotOf(`queue:\n  retry: [1h]\nservers:\n  - name: m365\n    host: smtp.acme.example\n    username: relay@acme.example\n    password: pw\n${limits}`);
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(...chunk.toString().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)), done()) }));
  const accounts = new AccountBook(logger, clock);
  let writes = 0;
  const write = accounts.write.bind(accounts);
  accounts.write = (s: AccountState) => (writes++, write(s));
  await accounts.load(stateDir, clock.now());
  const sends: { id: string; to: readonly string[]; at: number }[] = [];
  const saved = new Map<string, QueueEntryMeta>();
  const store = {
    list: async () => [],
    update: async (m: QueueEntryMeta) => void saved.set(m.id, structuredClone(m)),
    remove: async () => undefined,
    moveToFailed: async () => undefined,
  } as unknown as QueueStore;
  let running = 0;
  let peak = 0;
  const runner = new QueueRunner({
    store,
    getSnapshot: () => snapshot,
    logger,
    accounts,
    writeNotice: async () => undefined,
    clock,
    transport: {
      send: async (meta, _account, env) => {
        sends.push({ id: meta.id, to: env.to, at: clock.now() });
        peak = Math.max(peak, ++running);
        try {
          return await script(meta, sends.length);
        } finally {
          running--;
        }
      },
      primaryFailed: () => undefined,
    },
  });
  await runner.start();
  // lets the real file writes (budgets in state_dir) finish between steps of the manual clock
  const step = async (ms = 0) => {
    for (let i = 0; i < 5; i++) {
      await clock.advance(i === 0 ? ms : 0);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  return { clock, runner, lines, sends, saved, accounts, stateDir, step, peak: () => peak, writes: () => writes };
}

const sent = (): SendOutcome => ({ ok: true, accepted: ['a@example.net'], refused: [], upstreamReply: '250 2.0.0 OK' });
const failed = (raw: object): SendOutcome => ({ ok: false, error: classifyUpstreamError(raw, ctx) });

describe('QueueRunner keeps an account inside its limits (manual clock)', () => {
  it('never goes over daily recipients: the rest waits with reason quota until the window frees, then goes', async () => {
    const h = await harness('    daily: {recipients: 3}\n', () => sent());
    for (const id of ['Q1', 'Q2', 'Q3', 'Q4', 'Q5']) h.runner.enqueue(entry(id));
    await h.step();
    expect(h.sends.map((s) => s.id)).toEqual(['Q1', 'Q2', 'Q3']);
    const waiting = h.saved.get('Q4')!;
    expect(waiting.attempts).toBe(0);
    expect(waiting.lastError).toMatchObject({ kind: 'quota', code: 451, enhanced: '4.7.0' });
    expect(waiting.recipients[0]!.status).toBe('pending');
    const freeAt = T0 + 2 * MIN + WINDOW_MS;
    expect(waiting.nextAttemptAt).toBe(new Date(freeAt).toISOString());
    // the three sends were made durable, group-committed, before they went
    expect(JSON.parse(readFileSync(join(h.stateDir, 'budgets', `${encodeURIComponent('m365/relay@acme.example')}.json`), 'utf8')).buckets).toEqual([[T0, 3, 3]]);
    expect(h.writes()).toBeLessThanOrEqual(2);

    await h.step(freeAt - T0 - 1);
    expect(h.sends).toHaveLength(3);
    await h.step(1);
    expect(h.sends.map((s) => s.id)).toEqual(['Q1', 'Q2', 'Q3', 'Q4', 'Q5']);
    expect(h.lines.filter((l) => l.result === 'failed')).toEqual([]);
    // the 80% warning came once
    expect(h.lines.filter((l) => l.budget === 'recipients' && l.level === 40)).toHaveLength(1);
  });

  it('a budget reached before a restart is still reached after it', async () => {
    const first = await harness('    daily: {messages: 2}\n', () => sent());
    first.runner.enqueue(entry('B1'));
    first.runner.enqueue(entry('B2'));
    await first.step();
    expect(first.sends).toHaveLength(2);
    await first.runner.stop(0);

    const second = await harness('    daily: {messages: 2}\n', () => sent(), first.stateDir);
    second.runner.enqueue(entry('B3'));
    await second.step();
    expect(second.sends).toEqual([]);
    expect(second.saved.get('B3')!.lastError?.reason).toMatch(/has used its 2 messages per 24 h \(2 counted\)/);
  });

  it('a message with more recipients than the daily budget goes in batches of the budget, one window each', async () => {
    const h = await harness('    daily: {recipients: 2}\n', () => sent());
    h.runner.enqueue(entry('BIG', ['a@x.example', 'b@x.example', 'c@x.example']));
    await h.step();
    expect(h.sends.map((s) => s.to)).toEqual([['a@x.example', 'b@x.example']]);
    expect(h.saved.get('BIG')!.recipients.map((r) => r.status)).toEqual(['delivered', 'delivered', 'pending']);
    await h.step(2 * MIN + WINDOW_MS);
    expect(h.sends.map((s) => s.to)).toEqual([['a@x.example', 'b@x.example'], ['c@x.example']]);
  });

  it('runs at most `connections` transactions at once', async () => {
    const release: (() => void)[] = [];
    const h = await harness('    connections: 2\n', () => new Promise<SendOutcome>((resolve) => release.push(() => resolve(sent()))));
    for (let i = 0; i < 6; i++) h.runner.enqueue(entry(`C${i}`));
    await h.step();
    expect(h.sends).toHaveLength(2);
    while (release.length) {
      release.shift()!();
      await h.step();
    }
    expect(h.sends).toHaveLength(6);
    expect(h.peak()).toBe(2);
  });

  it('432 4.3.2: the account runs fewer transactions and the entry comes again in seconds, not on the queue schedule', async () => {
    const h = await harness('    connections: 3\n', (meta, n) => (n === 1 ? failed(THREAD_LIMIT) : sent()));
    h.runner.enqueue(entry('T1'));
    await h.step();
    expect(h.saved.get('T1')!.nextAttemptAt).toBe(new Date(T0 + 5 * SEC).toISOString());
    expect(h.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('account m365/relay@acme.example backs off'))).toMatchObject({ connections: 1 });
    await h.step(5 * SEC);
    expect(h.sends.map((s) => [s.id, s.at - T0])).toEqual([
      ['T1', 0],
      ['T1', 5 * SEC],
    ]);
  });

  it('554 5.2.0 holds the account: nothing is sent until the hold ends (1 h without a daily budget), every entry waits with reason quota', async () => {
    const h = await harness('', (meta, n) => (n === 1 ? failed(QUOTA) : sent()));
    h.runner.enqueue(entry('H1'));
    await h.step();
    h.runner.enqueue(entry('H2'));
    await h.step();
    expect(h.sends.map((s) => s.id)).toEqual(['H1']);
    for (const id of ['H1', 'H2']) {
      expect(h.saved.get(id)!.lastError?.kind).toBe('quota');
      expect(h.saved.get(id)!.nextAttemptAt).toBe(new Date(T0 + HOLD_UNKNOWN_MS).toISOString());
      expect(h.saved.get(id)!.recipients[0]!.status).toBe('pending');
    }
    await h.step(HOLD_UNKNOWN_MS);
    expect(h.sends.map((s) => s.id).sort()).toEqual(['H1', 'H1', 'H2']);
    expect(h.lines.filter((l) => l.result === 'failed')).toEqual([]);
  });
});

describe('/status and /metrics show each account', () => {
  it('its budgets use and limit over 24 h, its connections, its last success and last failure with the reason', async () => {
    const h = await harness('    daily: {recipients: 3, messages: 10}\n    connections: 3\n', (_m, n) => (n === 2 ? failed(THREAD_LIMIT) : sent()));
    h.runner.enqueue(entry('S1'));
    h.runner.enqueue(entry('S2'));
    await h.step();
    const [account] = accountStatus(h.accounts.all(), h.clock.now());
    expect(account).toMatchObject({
      account: 'm365/relay@acme.example',
      server: 'm365',
      address: 'relay@acme.example',
      // the refused one was given back
      budgets: [
        { budget: 'recipients', used: 1, limit: 3, window: '24h' },
        { budget: 'messages', used: 1, limit: 10, window: '24h' },
      ],
      connections: { inUse: 0, limit: 3 },
      backoff: { connections: 1 },
      lastSuccess: { at: new Date(T0).toISOString() },
      lastFailure: { kind: 'throttled', code: 451, enhanced: '4.3.2', upstreamReply: THREAD_LIMIT.response },
    });
    const metrics = new RelayMetrics({
      queueStats: () => ({ depth: 0, oldestAgeSeconds: 0 }),
      upstreamConnections: () => 0,
      accountBudgets: () => accountStatus(h.accounts.all(), h.clock.now()).flatMap((a) => a.budgets.map((b) => ({ account: a.account, ...b }))),
    });
    const text = await metrics.registry.metrics();
    expect(text).toContain('sendas_account_budget_used{account="m365/relay@acme.example",budget="recipients"} 1');
    expect(text).toContain('sendas_account_budget_limit{account="m365/relay@acme.example",budget="messages"} 10');
  });
});

describe('passthrough through the account book (AccountGate)', () => {
  const account = (limits: string) => {
    const snapshot = snapshotOf(`servers:\n  - name: m365\n    host: h\n    username: relay@acme.example\n    password: pw\n${limits}`);
    return accountFor(snapshot, undefined) as Account;
  };
  const book = async (clock: ManualClock) => {
    const b = new AccountBook(pino({ level: 'silent' }), clock);
    await b.load(mkdtempSync(join(tmpdir(), 'sendas-gate-')), clock.now());
    return b;
  };

  it('admits what fits (counted and on disk first), refuses the rest with 451 4.7.0 naming the budget, gives back what the upstream did not take', async () => {
    const clock = new ManualClock(T0);
    const b = await book(clock);
    const a = account('    daily: {recipients: 2}\n');
    const first = await b.admit(a, 2);
    expect(first).not.toBeInstanceOf(Error);
    const refused = await b.admit(a, 1);
    expect(refused).toMatchObject({ kind: 'quota', status: { code: 451, enhanced: '4.7.0' } });
    expect((refused as Error).message).toMatch(/has used its 2 recipients per 24 h \(2 counted\); try again after 2026-01-11 12:02 UTC$/);
    (first as { done(o: SendOutcome | undefined): void }).done(failed({ code: 'ESOCKET', message: 'connect ECONNREFUSED', originalCode: 'ECONNREFUSED' }));
    expect(await b.admit(a, 2)).not.toBeInstanceOf(Error);
  });

  it('holds the account after a 554 5.2.0 (an hour without daily), and runs at most `connections` at once', async () => {
    const clock = new ManualClock(T0);
    const b = await book(clock);
    const a = account('    connections: 1\n');
    const first = (await b.admit(a, 1)) as { done(o: SendOutcome | undefined): void };
    let second: unknown;
    const waiting = b.admit(a, 1).then((t) => (second = t));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(second).toBeUndefined();
    first.done(failed(QUOTA));
    await waiting;
    (second as { done(o: SendOutcome | undefined): void }).done(sent());
    expect(await b.admit(a, 1)).toMatchObject({ kind: 'quota', status: { code: 451 } });
    await clock.advance(HOLD_UNKNOWN_MS);
    expect(await b.admit(a, 1)).not.toBeInstanceOf(Error);
  });
});

describe('the account budget file', () => {
  it('is not written at all without a daily budget (no I/O per message)', async () => {
    const h = await harness('', () => sent());
    h.runner.enqueue(entry('N1'));
    await h.step();
    expect(h.sends).toHaveLength(1);
    expect(existsSync(join(h.stateDir, 'budgets'))).toBe(false);
    expect(h.writes()).toBe(0);
  });
});
