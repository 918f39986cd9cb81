import { afterEach, describe, expect, it, vi } from 'vitest';
import { formatAge, formatDuration, parseDuration, parseRate } from '../../src/config/duration.js';
import type { QueueConfig, ServerConfig } from '../../src/config/types.js';
import { FailoverState } from '../../src/delivery/failover.js';
import { RateWindow } from '../../src/delivery/rate-limit.js';
import { retryDelay, verdictAfterAttempt } from '../../src/delivery/schedule.js';
import { classifyUpstreamError } from '../../src/errors/classify.js';
import { RelayError } from '../../src/errors/relay-error.js';
import type { QueueEntryMeta, RecipientState } from '../../src/queue/entry.js';
import { ManualClock } from './manual-clock.js';
import { queueEntry } from './helpers.js';

const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

describe('parseDuration', () => {
  it.each([
    ['30s', 30 * SEC],
    ['15m', 15 * MIN],
    ['1h', HOUR],
    ['2d', 2 * DAY],
    ['500ms', 500],
    ['0s', 0],
    ['90', 90 * SEC],
    ['1.5s', 1500],
    ['1.5h', 90 * MIN],
    [' 15m ', 15 * MIN],
    ['15 m', 15 * MIN],
  ])('%j → %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('a bare number (YAML number) is seconds', () => {
    expect(parseDuration(30)).toBe(30 * SEC);
    expect(parseDuration(0)).toBe(0);
    expect(parseDuration(2.5)).toBe(2500);
  });

  it('ms is milliseconds, not minutes followed by junk', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('500m')).toBe(500 * MIN);
  });

  it.each(['', ' ', 'abc', '15x', '15 min', '15mins', 'm', '-5s', '1e3s', '15m30s', '1,5s', '0x10', 's15', '15ms s'])('%j is not a duration', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });

  it.each([-1, Number.NaN, Number.POSITIVE_INFINITY])('number %d is not a duration', (n) => {
    expect(parseDuration(n)).toBeUndefined();
  });

  // parseRate ("30/MIN") and parseSize ("25mb") accept any case; durations do not.
  it('accepts units in upper case like rates and sizes do ("2H", "30S", "500MS")', () => {
    expect(parseDuration('2H')).toBe(2 * HOUR);
    expect(parseDuration('30S')).toBe(30 * SEC);
    expect(parseDuration('500MS')).toBe(500);
    expect(parseDuration('2D')).toBe(2 * DAY);
  });
});

describe('formatDuration', () => {
  it.each([
    [30 * SEC, '30s'],
    [15 * MIN, '15m'],
    [HOUR, '1h'],
    [2 * DAY, '2d'],
    [90 * SEC, '90s'],
    [36 * HOUR, '36h'],
    [1500, '1.5s'],
    [500, '500ms'],
    [0, '0ms'],
  ])('%i ms → %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it.each(['30s', '15m', '1h', '2d', '500ms', '90s', '36h'])('round-trips %s', (text) => {
    expect(formatDuration(parseDuration(text)!)).toBe(text);
  });
});

describe('formatAge', () => {
  it.each([
    [0, '0s'],
    [999, '0s'],
    [59 * SEC + 999, '59s'],
    [60 * SEC, '1m'],
    [59 * MIN + 59 * SEC, '59m'],
    [HOUR, '1h 0m'],
    [2 * HOUR + 5 * MIN + 30 * SEC, '2h 5m'],
    [23 * HOUR + 59 * MIN, '23h 59m'],
    [DAY, '1d 0h'],
    [DAY + 4 * HOUR + 30 * MIN, '1d 4h'],
    [10 * DAY + 23 * HOUR, '10d 23h'],
    [-5000, '0s'],
  ])('%i ms → %s', (ms, text) => {
    expect(formatAge(ms)).toBe(text);
  });
});

describe('parseRate', () => {
  it.each([
    ['30/min', 30, MIN],
    ['10/s', 10, SEC],
    ['100/hour', 100, HOUR],
    ['5/d', 5, DAY],
    ['5/day', 5, DAY],
    ['2/sec', 2, SEC],
    ['2/second', 2, SEC],
    ['7/m', 7, MIN],
    ['7/minute', 7, MIN],
    ['7/h', 7, HOUR],
    ['30/MIN', 30, MIN],
    ['30/Min', 30, MIN],
    ['100/HOUR', 100, HOUR],
    ['10/S', 10, SEC],
    [' 30 / min ', 30, MIN],
  ])('%j → %i per %i ms', (text, count, windowMs) => {
    expect(parseRate(text)).toEqual({ count, windowMs });
  });

  it.each(['', '30', '30/', '/min', '0/min', '-1/min', '1.5/min', '30/ms', '30/week', '30/mins', '30 per min', 'thirty/min', '30/min/s'])(
    '%j is not a rate',
    (text) => {
      expect(parseRate(text)).toBeUndefined();
    },
  );
});

describe('retryDelay', () => {
  const schedule = [1 * MIN, 5 * MIN, 15 * MIN];

  it('follows the schedule, the last wait repeating', () => {
    expect(retryDelay(1, schedule)).toBe(1 * MIN);
    expect(retryDelay(2, schedule)).toBe(5 * MIN);
    expect(retryDelay(3, schedule)).toBe(15 * MIN);
    expect(retryDelay(4, schedule)).toBe(15 * MIN);
    expect(retryDelay(7, schedule)).toBe(15 * MIN);
    expect(retryDelay(1000, schedule)).toBe(15 * MIN);
  });

  it('a one-step schedule always waits that long', () => {
    expect([1, 2, 9].map((n) => retryDelay(n, [30 * SEC]))).toEqual([30 * SEC, 30 * SEC, 30 * SEC]);
  });

  it('0 attempts counts as the first', () => {
    expect(retryDelay(0, schedule)).toBe(1 * MIN);
  });
});

const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);
const iso = (ms: number) => new Date(ms).toISOString();
const QUEUE: QueueConfig = { dir: '/unused', retryMs: [1 * MIN, 5 * MIN, 15 * MIN], maxAgeMs: HOUR, notify: undefined };

function recipient(address: string, status: RecipientState['status']): RecipientState {
  return { address, status, attempts: 1, ...(status === 'delivered' ? { deliveredAt: iso(T0), upstreamReply: '250 2.0.0 OK' } : {}) };
}

function metaWith(recipients: RecipientState[], extra: Partial<QueueEntryMeta> = {}): QueueEntryMeta {
  return queueEntry(recipients, { receivedAt: iso(T0), ...extra });
}

describe('verdictAfterAttempt', () => {
  const pending = () => [recipient('a@example.net', 'pending'), recipient('b@example.net', 'delivered')];

  it('finished when every recipient was delivered', () => {
    const meta = metaWith([recipient('a@example.net', 'delivered'), recipient('b@example.net', 'delivered')]);
    expect(verdictAfterAttempt(meta, new Date(T0 + MIN), QUEUE)).toEqual({ kind: 'finished', failed: 0, delivered: 2 });
  });

  it('finished with counts when some failed for good', () => {
    const meta = metaWith([recipient('a@example.net', 'delivered'), recipient('b@example.net', 'failed'), recipient('c@example.net', 'failed')]);
    expect(verdictAfterAttempt(meta, new Date(T0 + MIN), QUEUE)).toEqual({ kind: 'finished', failed: 2, delivered: 1 });
  });

  it('finished even past max_age when nothing is pending (a delivered message is never "expired")', () => {
    const meta = metaWith([recipient('a@example.net', 'delivered')]);
    expect(verdictAfterAttempt(meta, new Date(T0 + 5 * HOUR), QUEUE)).toEqual({ kind: 'finished', failed: 0, delivered: 1 });
  });

  it('retry at now + the delay for the number of attempts so far', () => {
    const now = T0 + 2 * MIN;
    const at = (attempts: number) => verdictAfterAttempt(metaWith(pending(), { attempts }), new Date(now), QUEUE);
    expect(at(1)).toEqual({ kind: 'retry', at: new Date(now + 1 * MIN) });
    expect(at(2)).toEqual({ kind: 'retry', at: new Date(now + 5 * MIN) });
    expect(at(3)).toEqual({ kind: 'retry', at: new Date(now + 15 * MIN) });
    expect(at(7)).toEqual({ kind: 'retry', at: new Date(now + 15 * MIN) });
  });

  it('a retry that would fall after receivedAt + max_age is moved to exactly the expiry', () => {
    const now = T0 + 50 * MIN; // +15m would be 65m
    const v = verdictAfterAttempt(metaWith(pending(), { attempts: 3 }), new Date(now), QUEUE);
    expect(v).toEqual({ kind: 'retry', at: new Date(T0 + HOUR) });
  });

  it('one millisecond before expiry: one last attempt at the expiry', () => {
    const v = verdictAfterAttempt(metaWith(pending(), { attempts: 1 }), new Date(T0 + HOUR - 1), QUEUE);
    expect(v).toEqual({ kind: 'retry', at: new Date(T0 + HOUR) });
  });

  it('expired when now ≥ receivedAt + max_age and recipients are pending', () => {
    expect(verdictAfterAttempt(metaWith(pending()), new Date(T0 + HOUR), QUEUE)).toEqual({ kind: 'expired' });
    expect(verdictAfterAttempt(metaWith(pending()), new Date(T0 + 3 * HOUR), QUEUE)).toEqual({ kind: 'expired' });
  });

  it('pending plus failed recipients is not finished', () => {
    const meta = metaWith([recipient('a@example.net', 'failed'), recipient('b@example.net', 'pending')]);
    expect(verdictAfterAttempt(meta, new Date(T0 + MIN), QUEUE).kind).toBe('retry');
  });

  it('requeuedAt resets the age: max_age counts from it, not from receivedAt', () => {
    const requeued = T0 + 5 * HOUR;
    const meta = metaWith(pending(), { attempts: 9, requeuedAt: iso(requeued) });
    // long after receivedAt + max_age, but only 10 minutes after the requeue
    expect(verdictAfterAttempt(meta, new Date(requeued + 10 * MIN), QUEUE)).toEqual({ kind: 'retry', at: new Date(requeued + 25 * MIN) });
    // the cap is relative to requeuedAt too
    expect(verdictAfterAttempt(meta, new Date(requeued + 50 * MIN), QUEUE)).toEqual({ kind: 'retry', at: new Date(requeued + HOUR) });
    expect(verdictAfterAttempt(meta, new Date(requeued + HOUR), QUEUE)).toEqual({ kind: 'expired' });
  });

  it('a message that keeps failing: attempts follow the schedule, the last is at the expiry, then it expires', () => {
    const meta = metaWith([recipient('a@example.net', 'pending')], { attempts: 0 });
    const attemptTimes: number[] = [];
    let now = T0;
    for (let guard = 0; guard < 50; guard++) {
      attemptTimes.push(now);
      meta.attempts++;
      const v = verdictAfterAttempt(meta, new Date(now), QUEUE);
      if (v.kind !== 'retry') {
        expect(v.kind).toBe('expired');
        break;
      }
      expect(v.at.getTime()).toBeGreaterThan(now);
      expect(v.at.getTime()).toBeLessThanOrEqual(T0 + HOUR);
      now = v.at.getTime();
    }
    expect(attemptTimes.map((t) => (t - T0) / MIN)).toEqual([0, 1, 6, 21, 36, 51, 60]);
  });
});

describe('RateWindow', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('waitMs: free for the first `count`, then until the oldest send leaves the window', () => {
    const w = new RateWindow({ count: 3, windowMs: 1000 });
    expect(w.waitMs(0)).toBe(0);
    w.record(0);
    expect(w.waitMs(100)).toBe(0);
    w.record(100);
    expect(w.waitMs(200)).toBe(0);
    w.record(200);
    expect(w.waitMs(200)).toBe(800);
    expect(w.waitMs(500)).toBe(500);
    expect(w.waitMs(999)).toBe(1);
    // the send at 0 is outside the window (0, 1000]: a slot is free
    expect(w.waitMs(1000)).toBe(0);
    w.record(1000);
    // now 100, 200, 1000 are in the window: wait for 100 to leave
    expect(w.waitMs(1000)).toBe(100);
    expect(w.waitMs(1100)).toBe(0);
  });

  it('waitMs does not take a slot', () => {
    const w = new RateWindow({ count: 1, windowMs: 1000 });
    expect(w.waitMs(0)).toBe(0);
    expect(w.waitMs(0)).toBe(0);
    w.record(0);
    expect(w.waitMs(0)).toBe(1000);
  });

  it('acquire: resolves in order, never more than `count` in any window', async () => {
    vi.useFakeTimers({ now: 0 });
    const w = new RateWindow({ count: 3, windowMs: 1000 });
    const got: { i: number; at: number }[] = [];
    const all = Array.from({ length: 8 }, (_, i) => w.acquire().then(() => got.push({ i, at: Date.now() })));
    await vi.advanceTimersByTimeAsync(0);
    expect(got.map((g) => g.i)).toEqual([0, 1, 2]);
    await vi.advanceTimersByTimeAsync(999);
    expect(got).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(1);
    expect(got).toHaveLength(6);
    await vi.advanceTimersByTimeAsync(1000);
    await Promise.all(all);
    expect(got.map((g) => g.i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(got.map((g) => g.at)).toEqual([0, 0, 0, 1000, 1000, 1000, 2000, 2000]);
    // sliding window: the (k+count)th send starts at least windowMs after the kth
    for (let k = 0; k + 3 < got.length; k++) expect(got[k + 3]!.at - got[k]!.at).toBeGreaterThanOrEqual(1000);
  });

  it('acquire with staggered sends waits only for the oldest to leave', async () => {
    vi.useFakeTimers({ now: 0 });
    const w = new RateWindow({ count: 3, windowMs: 1000 });
    await w.acquire();
    vi.setSystemTime(300);
    await w.acquire();
    vi.setSystemTime(600);
    await w.acquire();
    vi.setSystemTime(700);
    let at: number | undefined;
    const p = w.acquire().then(() => (at = Date.now()));
    await vi.advanceTimersByTimeAsync(299);
    expect(at).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    await p;
    expect(at).toBe(1000);
    // the window now holds 300, 600, 1000: the next waits for 300 to leave
    expect(w.waitMs(1000)).toBe(300);
  });

  it('acquire waits on the clock it is given, not on real time', async () => {
    const clock = new ManualClock(5000);
    const w = new RateWindow({ count: 1, windowMs: 1000 });
    await w.acquire(clock);
    expect(w.waitMs(5000)).toBe(1000);
    let got = false;
    const p = w.acquire(clock).then(() => (got = true));
    await clock.advance(999);
    expect(got).toBe(false);
    await clock.advance(1);
    await p;
    expect(got).toBe(true);
    expect(w.waitMs(6000)).toBe(1000);
  });
});

const ctx = { serverName: 'main', host: 'smtp.acme.example', port: 587, login: 'relay@acme.example', passwordPath: 'servers[0].password' };

describe('unreachable (what failover acts on), as the classification says', () => {
  const isUnreachable = (err: RelayError) => err.unreachable;
  it.each([
    ['connection refused', { code: 'ESOCKET', message: 'connect ECONNREFUSED 127.0.0.1:587' }],
    ['host unreachable', { code: 'ESOCKET', message: 'connect EHOSTUNREACH 10.0.0.9:587', originalCode: 'EHOSTUNREACH', command: 'CONN' }],
    ['pool gave up on connections closed before the greeting', { code: 'ECONNECTION', message: 'Reached maximum number of retries after connection was closed' }],
    ['timeout', { code: 'ETIMEDOUT', message: 'Greeting never received' }],
    ['greeting timeout', { code: 'ETIMEDOUT', message: 'Greeting never received', timeoutType: 'GREETING_TIMEOUT', command: 'CONN' }],
    ['DNS', { code: 'EDNS', message: 'getaddrinfo ENOTFOUND smtp.acme.example', originalCode: 'ENOTFOUND' }],
    ['TLS handshake', { code: 'ETLS', message: 'Error initiating TLS' }],
    ['certificate', { code: 'ESOCKET', message: 'certificate has expired', originalCode: 'CERT_HAS_EXPIRED' }],
    ['421 at connect', { code: 'ECONNECTION', command: 'CONN', responseCode: 421, response: '421 Service not available' }],
    ['421 after DATA', { code: 'EMESSAGE', command: 'DATA', responseCode: 421, response: '421 4.3.2 Service shutting down' }],
    ['multi-line 421', { code: 'EPROTOCOL', command: 'EHLO', responseCode: 421, response: '421-4.3.2 Going down\r\n421 4.3.2 for maintenance' }],
  ])('%s → unreachable', (_name, raw) => {
    expect(isUnreachable(classifyUpstreamError(raw, ctx))).toBe(true);
  });

  it.each([
    ['550 recipient', { code: 'EENVELOPE', command: 'RCPT TO', responseCode: 550, response: '550 5.1.1 No such user', recipient: 'x@example.net' }],
    ['550 sender', { code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 550, response: '550 5.7.60 Not allowed to send as this sender' }],
    ['451 4.7.x throttle', { code: 'EPROTOCOL', command: 'DATA', responseCode: 451, response: '451 4.7.500 Server busy, rate limited' }],
    ['450 mailbox busy', { code: 'EENVELOPE', command: 'RCPT TO', responseCode: 450, response: '450 4.2.1 Mailbox busy', recipient: 'x@example.net' }],
    ['auth refused', { code: 'EAUTH', command: 'AUTH PLAIN', responseCode: 535, response: '535 5.7.8 Authentication credentials invalid' }],
    ['552 size', { code: 'EMESSAGE', command: 'DATA', responseCode: 552, response: '552 5.3.4 Message too big' }],
    ['554 after DATA mentioning 421', { code: 'EMESSAGE', command: 'DATA', responseCode: 554, response: '554 5.7.1 rejected (code 421 seen earlier)' }],
    // connected, then dropped: the host answered
    ['closed after the greeting', { code: 'ECONNECTION', message: 'Connection closed unexpectedly', command: 'CONN' }],
    ['reset mid-DATA', { code: 'ESOCKET', message: 'read ECONNRESET', originalCode: 'ECONNRESET', command: 'CONN' }],
    ['idle in the session', { code: 'ETIMEDOUT', message: 'Timeout', timeoutType: 'SOCKET_TIMEOUT', command: 'CONN' }],
  ])('%s → not unreachable', (_name, raw) => {
    const err = classifyUpstreamError(raw, ctx);
    expect(isUnreachable(err)).toBe(false);
  });

  it('the 4.7.x throttle is classified as throttled, yet only a 421 means unreachable', () => {
    const throttle = classifyUpstreamError({ code: 'EPROTOCOL', command: 'DATA', responseCode: 451, response: '451 4.7.500 Server busy' }, ctx);
    const closed = classifyUpstreamError({ code: 'ECONNECTION', command: 'CONN', responseCode: 421, response: '421 Service not available' }, ctx);
    expect([throttle.kind, closed.kind]).toEqual(['throttled', 'throttled']);
    expect([isUnreachable(throttle), isUnreachable(closed)]).toEqual([false, true]);
  });

  it('a hand-built error is unreachable only when it says so: nothing reads its kind or reply text for it', () => {
    expect(isUnreachable(new RelayError('network', { code: 451, enhanced: '4.4.1' }, 'x', { unreachable: true }))).toBe(true);
    expect(isUnreachable(new RelayError('network', { code: 451, enhanced: '4.4.1' }, 'x'))).toBe(false);
    expect(isUnreachable(new RelayError('refused', { code: 451, enhanced: '4.3.0' }, 'x', { upstreamReply: '421 4.3.0 bye' }))).toBe(false);
    expect(isUnreachable(new RelayError('internal', { code: 451, enhanced: '4.3.0' }, 'x'))).toBe(false);
  });
});

function server(alternate: ServerConfig['alternate']): ServerConfig {
  return {
    name: 'main',
    isDefault: true,
    type: 'smtp',
    preset: undefined,
    host: 'smtp.acme.example',
    port: 587,
    security: 'starttls',
    auth: 'plain',
    username: 'relay@acme.example',
    password: undefined,
    address: 'relay@acme.example',
    tls: { ca: undefined, servername: undefined, minVersion: undefined, rejectUnauthorized: true },
    connections: 5,
    daily: undefined,
    oauth: undefined,
    allowPlaintextAuth: false,
    proxy: undefined,
    graphUrl: 'https://graph.microsoft.com',
    saveToSentItems: true,
    alternate,
    maxRecipients: undefined,
    rate: undefined,
    path: 'servers[0]',
  };
}

describe('FailoverState', () => {
  const withAlt = () => new FailoverState(server({ host: 'smtp2.acme.example', port: 2525, cooldownMs: 30 * SEC }));

  it('routes', () => {
    const f = withAlt();
    expect(f.primary()).toEqual({ host: 'smtp.acme.example', port: 587, alternate: false });
    expect(f.alternate()).toEqual({ host: 'smtp2.acme.example', port: 2525, alternate: true });
    expect(new FailoverState(server(undefined)).alternate()).toBeUndefined();
  });

  it('tries the primary until it fails', () => {
    const f = withAlt();
    expect(f.usingAlternate).toBe(false);
    expect(f.shouldTryPrimary(0)).toBe(true);
    expect(f.shouldTryPrimary(T0)).toBe(true);
  });

  it('after primaryFailed(now): not the primary until now + cooldown, then the primary again', () => {
    const f = withAlt();
    f.primaryFailed(T0);
    expect(f.usingAlternate).toBe(true);
    expect(f.shouldTryPrimary(T0)).toBe(false);
    expect(f.shouldTryPrimary(T0 + 30 * SEC - 1)).toBe(false);
    expect(f.shouldTryPrimary(T0 + 30 * SEC)).toBe(true);
    expect(f.shouldTryPrimary(T0 + HOUR)).toBe(true);
  });

  it('a failed probe starts a new cool-down from the probe', () => {
    const f = withAlt();
    f.primaryFailed(T0);
    f.primaryFailed(T0 + 30 * SEC);
    expect(f.shouldTryPrimary(T0 + 30 * SEC)).toBe(false);
    expect(f.shouldTryPrimary(T0 + 60 * SEC - 1)).toBe(false);
    expect(f.shouldTryPrimary(T0 + 60 * SEC)).toBe(true);
    expect(f.usingAlternate).toBe(true);
  });

  it('primaryWorked() ends the failover once: true, then false', () => {
    const f = withAlt();
    expect(f.primaryWorked(T0)).toBe(false); // never failed over
    f.primaryFailed(T0);
    expect(f.primaryWorked(T0 + 30 * SEC)).toBe(true);
    expect(f.usingAlternate).toBe(false);
    expect(f.primaryWorked(T0 + 31 * SEC)).toBe(false);
    // back on the primary with no cool-down left over
    expect(f.shouldTryPrimary(T0 + 31 * SEC)).toBe(true);
  });

  it('a second failover after recovering gets its own cool-down', () => {
    const f = withAlt();
    f.primaryFailed(T0);
    f.primaryWorked(T0 + 30 * SEC);
    f.primaryFailed(T0 + HOUR);
    expect(f.shouldTryPrimary(T0 + HOUR + 29 * SEC)).toBe(false);
    expect(f.shouldTryPrimary(T0 + HOUR + 30 * SEC)).toBe(true);
  });

  it('inUse(): the alternate from the failover until the primary takes a send again, since the move', () => {
    const f = withAlt();
    expect(f.inUse()).toEqual({ route: f.primary(), since: undefined });
    f.primaryFailed(T0);
    expect(f.inUse()).toEqual({ route: f.alternate(), since: T0 });
    // past the cool-down sends probe the primary, but traffic is on the alternate until one succeeds
    f.primaryFailed(T0 + 30 * SEC);
    expect(f.inUse()).toEqual({ route: f.alternate(), since: T0 });
    f.primaryWorked(T0 + 60 * SEC, T0 + 61 * SEC);
    expect(f.inUse()).toEqual({ route: f.primary(), since: T0 + 61 * SEC });
  });

  it('without an alternate there is nowhere to fail over to: every send tries the primary', () => {
    const f = new FailoverState(server(undefined));
    f.primaryFailed(T0);
    expect(f.usingAlternate).toBe(false);
    expect(f.shouldTryPrimary(T0 + 1)).toBe(true);
  });
});
