import { mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { formatTrace, groupByMessage, traceCommand } from '../../src/cli/trace.js';
import { applyBatchOutcome } from '../../src/delivery/decide.js';
import { QueueRunner } from '../../src/delivery/queue-runner.js';
import type { QueueStore } from '../../src/queue/store.js';
import { ManualClock } from './manual-clock.js';
import { batchEvents, expiredEvents, pendingEvents } from '../../src/delivery/trace-events.js';
import { classifyUpstreamError } from '../../src/errors/classify.js';
import { findEvents, inserter, oldestEvent, openForWriting, prune } from '../../src/history/db.js';
import { REDACT_KEY_FILE, Redactor, redactKey, redactingLogger } from '../../src/history/redact.js';
import { Trace, traceText } from '../../src/history/trace.js';
import type { TraceEvent } from '../../src/history/types.js';
import { HistoryWriter } from '../../src/history/writer.js';
import { messageIdOf } from '../../src/reception/process.js';
import { BASE_YAML, queueEntry, snapshotOf } from './helpers.js';

const ctx = { serverName: 'main', host: 'smtp.acme.example', port: 587, login: 'relay@acme.example', passwordPath: 'servers[0].password' };
const NO_SUCH_USER = classifyUpstreamError({ code: 'EENVELOPE', responseCode: 550, response: '550 5.1.1 <gone@example.net>: no such user', command: 'RCPT TO', recipient: 'gone@example.net' }, ctx);
const FULL = classifyUpstreamError({ code: 'EENVELOPE', responseCode: 452, response: '452 4.2.2 Mailbox full', command: 'RCPT TO', recipient: 'full@example.net' }, ctx);
const AT = '2026-01-10T12:00:05.000Z';
const attemptCtx = { at: AT, account: 'main/support@acme.example', server: 'main', host: 'smtp.acme.example:587', identity: 'channel:support' };

const pending = (addresses: string[]) => addresses.map((address) => ({ address, status: 'pending' as const, attempts: 0 }));
const lines = () => {
  const out: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, done) => (out.push(...c.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)), done()) });
  return { out, logger: pino({ base: null }, sink) };
};
const event = (over: Partial<TraceEvent>): TraceEvent => ({ at: AT, event: 'queued', queueId: 'ABCDEFGHJKLM', recipient: 'a@example.net', envelopeFrom: 'crm@acme.example', ...over });

describe('trace events of a queue attempt (pure)', () => {
  it('one refused of three: two delivered with the DATA reply, one failed with its RCPT reply; the batch is partial', () => {
    const meta = queueEntry(pending(['a@example.net', 'gone@example.net', 'b@example.net']), { messageId: 'm1@acme.example', attempts: 1 });
    const outcome = { ok: true as const, accepted: ['a@example.net', 'b@example.net'], refused: [{ recipient: 'gone@example.net', error: NO_SUCH_USER }], upstreamReply: '250 2.0.0 OK queued' };
    expect(applyBatchOutcome(meta, meta.recipients, outcome, 'smtp.acme.example', Date.parse(AT))).toBe('partial');
    const events = batchEvents(meta, meta.recipients, outcome, attemptCtx);
    expect(events.map((e) => [e.recipient, e.event, e.reply])).toEqual([
      ['a@example.net', 'delivered', '250 2.0.0 OK queued'],
      ['gone@example.net', 'failed', '550 5.1.1 <gone@example.net>: no such user'],
      ['b@example.net', 'delivered', '250 2.0.0 OK queued'],
    ]);
    expect(events[1]).toMatchObject({ queueId: meta.id, messageId: 'm1@acme.example', attempt: 1, kind: 'recipient', host: 'smtp.acme.example:587', account: 'main/support@acme.example' });
  });

  it('every recipient refused is not "partial": failed when all are permanent, deferred when one may still go', () => {
    const one = queueEntry(pending(['gone@example.net']));
    expect(applyBatchOutcome(one, one.recipients, { ok: true, accepted: [], refused: [{ recipient: 'gone@example.net', error: NO_SUCH_USER }], upstreamReply: '' }, 'h', 0)).toBe('failed');
    const two = queueEntry(pending(['gone@example.net', 'full@example.net']));
    const outcome = { ok: true as const, accepted: [], refused: [{ recipient: 'gone@example.net', error: NO_SUCH_USER }, { recipient: 'full@example.net', error: FULL }], upstreamReply: '' };
    expect(applyBatchOutcome(two, two.recipients, outcome, 'h', 0)).toBe('deferred');
    expect(batchEvents(two, two.recipients, outcome, attemptCtx).map((e) => e.event)).toEqual(['failed', 'deferred']);
  });

  it('a failed transaction defers (or fails) the whole batch with its reason; quota and deletions carry no attempt', () => {
    const meta = queueEntry(pending(['a@example.net', 'b@example.net']), { attempts: 2 });
    const down = classifyUpstreamError({ code: 'ESOCKET', message: 'connect ECONNREFUSED 127.0.0.1:587', command: 'CONN' }, ctx);
    const events = batchEvents(meta, meta.recipients, { ok: false, error: down }, attemptCtx);
    expect(events.map((e) => [e.event, e.attempt, e.kind])).toEqual([
      ['deferred', 2, 'network'],
      ['deferred', 2, 'network'],
    ]);
    expect(events[0]!.reply).toMatch(/^451 /);
    const quota = pendingEvents(meta, 'quota', down, attemptCtx);
    expect(quota.every((e) => e.event === 'quota' && e.attempt === undefined)).toBe(true);
    expect(pendingEvents(meta, 'deleted', undefined, attemptCtx).map((e) => [e.event, e.reply])).toEqual([
      ['deleted', undefined],
      ['deleted', undefined],
    ]);
  });

  it('max_age: the recipients that were waiting fail, those already settled do not again', () => {
    const meta = queueEntry([...pending(['a@example.net']), { address: 'b@example.net', status: 'delivered', attempts: 1 }]);
    meta.recipients[0]!.status = 'failed';
    meta.recipients[0]!.lastError = { kind: 'network', code: 451, enhanced: '4.4.7', reason: 'gave up after 2d and 9 attempts: no connection', at: AT };
    expect(expiredEvents(meta, new Set(['a@example.net']), attemptCtx).map((e) => [e.recipient, e.event, e.reply])).toEqual([['a@example.net', 'failed', '451 4.4.7 gave up after 2d and 9 attempts: no connection']]);
  });
});

describe('the queue runner traces every recipient on its injected clock', () => {
  it('delivered and failed per recipient of an attempt, deleted for the waiting ones of `sendas queue delete`', async () => {
    const clock = new ManualClock(Date.parse(AT));
    const { out, logger } = lines();
    const kept: TraceEvent[] = [];
    const store = { list: async () => [], update: async () => undefined, remove: async () => undefined, moveToFailed: async () => undefined } as unknown as QueueStore;
    const greylisted = classifyUpstreamError({ code: 'EMESSAGE', command: 'DATA', responseCode: 451, response: '451 4.3.0 Greylisted' }, ctx);
    const runner = new QueueRunner({
      store,
      getSnapshot: () => snapshotOf(),
      logger,
      writeNotice: async () => undefined,
      clock,
      trace: new Trace(logger, { add: (e) => kept.push(e) }),
      transport: {
        send: async (meta) => (meta.id === 'GREYLISTEDXX' ? { ok: false, error: greylisted } : { ok: true, accepted: ['a@example.net'], refused: [{ recipient: 'gone@example.net', error: NO_SUCH_USER }], upstreamReply: '250 2.0.0 OK' }),
        primaryFailed: () => undefined,
      },
    });
    await runner.start();
    const identity = { kind: 'channel' as const, name: 'support' };
    runner.enqueue(queueEntry(pending(['a@example.net', 'gone@example.net']), { id: 'PARTIALXXXXX', identity, messageId: 'm@acme.example', attempts: 0 }));
    runner.enqueue(queueEntry(pending(['c@example.net']), { id: 'GREYLISTEDXX', identity, attempts: 0 }));
    await clock.advance(0);
    await expect.poll(() => kept.length).toBe(3);
    expect(kept.map((e) => [e.queueId, e.recipient, e.event, e.reply, e.at])).toEqual([
      ['PARTIALXXXXX', 'a@example.net', 'delivered', '250 2.0.0 OK', AT],
      ['PARTIALXXXXX', 'gone@example.net', 'failed', '550 5.1.1 <gone@example.net>: no such user', AT],
      ['GREYLISTEDXX', 'c@example.net', 'deferred', '451 4.3.0 Greylisted', AT],
    ]);
    expect(kept[1]).toMatchObject({ messageId: 'm@acme.example', identity: 'channel:support', account: 'main/support@acme.example', host: 'smtp.acme.example:587', attempt: 1, kind: 'recipient' });
    await expect.poll(() => runner.forget('GREYLISTEDXX')).toBe(true);
    expect(kept.at(-1)).toMatchObject({ queueId: 'GREYLISTEDXX', recipient: 'c@example.net', event: 'deleted' });
    expect(out.filter((l) => l.trace !== undefined)).toHaveLength(4);
    await runner.stop(0);
  });
});

describe('the trace line', () => {
  it('reads like Postfix: to, relay, attempt, status with the reply', () => {
    expect(traceText(event({ event: 'delivered', host: 'smtp.office365.com:587', attempt: 1, reply: '250 2.0.0 OK <x>\r\n' }))).toBe('to=<a@example.net>, relay=smtp.office365.com:587, attempt=1, status=delivered (250 2.0.0 OK <x>)');
    expect(traceText(event({}))).toBe('to=<a@example.net>, status=queued');
  });

  it('is one log line with the event under `trace` (not `result`) and goes to the store, redacted there as in the log', () => {
    const { out, logger } = lines();
    const kept: TraceEvent[] = [];
    const redactor = new Redactor(Buffer.from('key'));
    new Trace(redactingLogger(logger, redactor), { add: (e) => kept.push(e) }, redactor).record(event({ event: 'failed', reply: '550 5.1.1 <a@example.net> unknown', kind: 'recipient' }));
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ level: 40, trace: 'failed', id: 'ABCDEFGHJKLM', kind: 'recipient' });
    expect(out[0]!.result).toBeUndefined();
    const hash = redactor.address('a@example.net');
    expect(out[0]).toMatchObject({ recipient: hash, reply: `550 5.1.1 <${hash}> unknown`, msg: `to=<${hash}>, status=failed (550 5.1.1 <${hash}> unknown)` });
    expect(kept).toEqual([expect.objectContaining({ recipient: hash, envelopeFrom: redactor.address('crm@acme.example'), reply: `550 5.1.1 <${hash}> unknown` })]);
  });
});

describe('log.redact', () => {
  const r = new Redactor(Buffer.from('a key'));

  it('hashes an address stably, case-blind, keyed, as h: and 12 hex digits; the domain is not kept', () => {
    expect(r.address('Customer@Example.NET')).toMatch(/^h:[0-9a-f]{12}$/);
    expect(r.address('Customer@Example.NET')).toBe(r.address('customer@example.net'));
    expect(new Redactor(Buffer.from('another key')).address('customer@example.net')).not.toBe(r.address('customer@example.net'));
    expect(r.address('customer@example.net')).not.toContain('example');
  });

  it('finds addresses inside text, and a second pass changes nothing', () => {
    const once = r.text('Upstream main accepted none: <gone@example.net> 550; main/support@acme.example; Message-ID <a1.b2@crm.acme.example>, not 5.1.1 nor x@');
    expect(once).not.toMatch(/@[a-z]/);
    expect(once).toContain('main/h:');
    expect(once).toContain('nor x@');
    expect(r.text(once)).toBe(once);
  });

  it('redacts every field, nested values and the message text of a logger and its children', () => {
    const { out, logger } = lines();
    const log = redactingLogger(logger, r);
    log.warn({ envelopeFrom: 'crm@acme.example', refused: [{ recipient: 'x@example.net', reason: 'no <x@example.net>' }], n: 3, ok: true }, 'sent to y@example.net');
    log.child({ stage: 'q' }).info({ fromBefore: 'Sales@Acme.example' }, 'child');
    const text = JSON.stringify(out);
    expect(text).not.toMatch(/[\w.]+@[\w-]+\.[\w.]+/);
    expect(out[0]).toMatchObject({ n: 3, ok: true, msg: `sent to ${r.address('y@example.net')}` });
    expect(out[1]).toMatchObject({ stage: 'q', fromBefore: r.address('sales@acme.example') });
  });

  it('keeps the key in state_dir (mode 0600), made once', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-redact-'));
    expect(redactKey(dir, false)).toBeUndefined();
    const key = redactKey(dir)!;
    expect(key).toHaveLength(32);
    expect(redactKey(dir)!.equals(key)).toBe(true);
    expect(statSync(join(dir, REDACT_KEY_FILE)).mode & 0o777).toBe(0o600);
  });
});

describe('the history database', () => {
  const db = () => {
    const d = openForWriting(join(mkdtempSync(join(tmpdir(), 'sendas-history-')), 'state', 'history.sqlite'));
    return { d, insert: inserter(d) };
  };

  it('finds by recipient or envelope from (any case, <…> allowed), by queue id or Message-ID exactly, oldest first, the newest N', () => {
    const { d, insert } = db();
    insert([
      event({ at: '2026-01-10T12:00:00.000Z', queueId: 'Q1', messageId: 'm1@acme.example' }),
      event({ at: '2026-01-10T12:00:01.000Z', queueId: 'Q1', messageId: 'm1@acme.example', event: 'delivered', reply: '250 ok' }),
      event({ at: '2026-01-10T12:00:02.000Z', queueId: 'Q2', recipient: 'b@example.net' }),
    ]);
    expect(findEvents(d, '<A@Example.net>', 10).map((e) => e.event)).toEqual(['queued', 'delivered']);
    expect(findEvents(d, 'crm@acme.example', 10).map((e) => e.queueId)).toEqual(['Q1', 'Q1', 'Q2']);
    expect(findEvents(d, 'crm@acme.example', 2).map((e) => e.queueId)).toEqual(['Q1', 'Q2']);
    expect(findEvents(d, 'Q2', 10)).toEqual([event({ at: '2026-01-10T12:00:02.000Z', queueId: 'Q2', recipient: 'b@example.net' })]);
    expect(findEvents(d, '<m1@acme.example>', 10)).toHaveLength(2);
    expect(findEvents(d, 'q2', 10)).toEqual([]);
    expect(findEvents(d, '  ', 10)).toEqual([]);
  });

  it('prunes what is older than the cut-off and says how far back it goes', () => {
    const { d, insert } = db();
    insert([event({ at: '2026-01-01T00:00:00.000Z' }), event({ at: '2026-01-05T00:00:00.000Z' }), event({ at: '2026-01-09T00:00:00.000Z' })]);
    expect(prune(d, '2026-01-04T00:00:00.000Z')).toBe(1);
    expect(oldestEvent(d)).toBe('2026-01-05T00:00:00.000Z');
    expect(prune(d, '2026-02-01T00:00:00.000Z')).toBe(2);
    expect(oldestEvent(d)).toBeUndefined();
  });
});

describe('the history writer (worker thread)', () => {
  it('writes in batches off the main thread, answers searches after what was added, and closes its file cleanly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-writer-'));
    const dropped: number[] = [];
    const w = new HistoryWriter({ stateDir: dir, keepMs: () => 86_400_000, logger: pino({ level: 'silent' }), onDropped: (n) => dropped.push(n) });
    w.start();
    const now = new Date().toISOString();
    for (let i = 0; i < 50; i++) w.add(event({ at: now, queueId: `Q${i}`, recipient: `r${i}@example.net` }));
    expect(await w.find('r49@example.net')).toEqual([event({ at: now, queueId: 'Q49', recipient: 'r49@example.net' })]);
    expect((await w.find('crm@acme.example', 1000)).length).toBe(50);
    await w.close();
    expect(readdirSync(dir).sort()).toEqual(['history.sqlite']);
    // closed: nothing more is kept, and that is counted
    w.add(event({}));
    expect(dropped).toEqual([1]);
  });

  it('a history that cannot be written drops its events, counted, and add() never throws', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'sendas-writer-')), 'not-a-dir');
    writeFileSync(file, 'x');
    const dropped: number[] = [];
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, new Writable({ write: (c: Buffer, _e, done) => (warnings.push(c.toString()), done()) }));
    const w = new HistoryWriter({ stateDir: file, keepMs: () => 86_400_000, logger, onDropped: (n) => dropped.push(n) });
    w.start();
    for (let i = 0; i < 3; i++) w.add(event({ queueId: `Q${i}` }));
    await expect(w.find('Q1')).rejects.toThrow();
    await expect.poll(() => dropped.reduce((a, b) => a + b, 0)).toBe(3);
    // paused after the failure: the next ones are dropped at once, without a round trip
    w.add(event({}));
    expect(dropped.reduce((a, b) => a + b, 0)).toBe(4);
    expect(warnings.join('')).toMatch(/could not be written/);
    await w.close();
  });
});

describe('sendas trace output', () => {
  it('per message: ids and sender, an event a line, then where each recipient stands', () => {
    const messages = groupByMessage([
      event({ queueId: 'Q1', messageId: 'm1@acme.example' }),
      event({ queueId: 'Q1', messageId: 'm1@acme.example', recipient: 'gone@example.net' }),
      event({ queueId: 'Q1', messageId: 'm1@acme.example', event: 'delivered', host: 'smtp:587', attempt: 1, reply: '250 ok', account: 'main/x' }),
      event({ queueId: 'Q1', messageId: 'm1@acme.example', recipient: 'gone@example.net', event: 'failed', attempt: 1, reply: '550 no', kind: 'recipient', fix: 'check the address' }),
    ]);
    expect(messages).toHaveLength(1);
    const text = formatTrace(messages);
    expect(text).toContain('queue id Q1  Message-ID <m1@acme.example>  from <crm@acme.example>');
    expect(text).toContain(`${AT}  delivered  a@example.net  account main/x  host smtp:587  attempt 1  reply "250 ok"`);
    expect(text).toContain('reply "550 no"  kind recipient  fix: check the address');
    expect(text).toContain('    a@example.net: delivered (250 ok)\n    gone@example.net: failed (550 no)');
  });

  it('exits 2 without a query, 1 when the history is off or not there yet', async () => {
    const err: string[] = [];
    const sink = new Writable({ write: (c: Buffer, _e, done) => (err.push(c.toString()), done()) });
    const dir = mkdtempSync(join(tmpdir(), 'sendas-cli-'));
    const snapshot = snapshotOf(BASE_YAML, `state_dir: ${dir}\n`);
    expect(await traceCommand(snapshot, ' ', { json: false, limit: undefined }, sink, sink)).toBe(2);
    expect(await traceCommand(snapshot, 'a@example.net', { json: false, limit: '0' }, sink, sink)).toBe(2);
    expect(await traceCommand(snapshot, 'a@example.net', { json: false, limit: undefined }, sink, sink)).toBe(1);
    expect(err.at(-1)).toMatch(/no delivery history at .*history\.sqlite yet/);
    expect(await traceCommand(snapshotOf(BASE_YAML, 'history: false\n'), 'a@example.net', { json: false, limit: undefined }, sink, sink)).toBe(1);
    expect(err.at(-1)).toMatch(/history is off/);
  });
});

describe('config: history and log.redact', () => {
  it('defaults: history kept 30 days, addresses logged as they are', () => {
    const s = snapshotOf();
    expect(s.history).toEqual({ keepMs: 30 * 86_400_000 });
    expect(s.log.redact).toBe(false);
    expect(snapshotOf(BASE_YAML, 'history:\n  keep: 7d\nlog:\n  redact: true\n')).toMatchObject({ history: { keepMs: 7 * 86_400_000 }, log: { redact: true } });
    expect(snapshotOf(BASE_YAML, 'history: false\n').history).toBe(false);
  });

  it('names the key of a wrong value', () => {
    expect(() => snapshotOf(BASE_YAML, 'log:\n  redact: yes please\n')).toThrow(/log\.redact/);
    expect(() => snapshotOf(BASE_YAML, 'history:\n  kep: 7d\n')).toThrow(/did you mean "keep"/);
  });
});

describe('Message-ID as the trace keeps it', () => {
  it('without brackets or folding; none for an empty header', () => {
    expect(messageIdOf('<a1.b2@crm.acme.example>')).toBe('a1.b2@crm.acme.example');
    expect(messageIdOf(' \r\n <x@y> (comment)')).toBe('x@y');
    expect(messageIdOf('')).toBeUndefined();
  });
});
