import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULTS } from '../../src/config/defaults.js';
import { diffSnapshots } from '../../src/config/diff.js';
import type { LimitsConfig } from '../../src/config/types.js';
import { AuthLimiter, failureDelayMs, lockoutError } from '../../src/listener/auth-limits.js';
import { checkDeadline } from '../../src/listener/deadline.js';
import { ConnectionCounts, SessionTracker, type LimitName } from '../../src/listener/session-limits.js';
import type { ConnectionHandle } from '../../src/listener/smtp-server-adapter.js';
import { ManualClock } from './manual-clock.js';
import { snapshotOf } from './helpers.js';

const LIMITS: LimitsConfig = { ...DEFAULTS.limits, idleTimeoutMs: 300_000, commandTimeoutMs: 60_000, dataTimeoutMs: 600_000, errorsPerSession: 3 };

describe('checkDeadline', () => {
  const idle = { busy: false, lastActivity: 1_000, lineSince: undefined, dataSince: undefined };

  it('waits for the idle timeout from the last byte or reply', () => {
    expect(checkDeadline(idle, LIMITS, 2_000)).toEqual({ kind: 'wait', until: 301_000 });
    expect(checkDeadline(idle, LIMITS, 301_000)).toEqual({ kind: 'expired', limit: 'idle', afterMs: 300_000 });
  });

  it('counts a command line from its first byte, whatever came after it', () => {
    const trickling = { ...idle, lastActivity: 60_500, lineSince: 1_000 };
    expect(checkDeadline(trickling, LIMITS, 60_999)).toEqual({ kind: 'wait', until: 61_000 });
    expect(checkDeadline(trickling, LIMITS, 61_000)).toEqual({ kind: 'expired', limit: 'command', afterMs: 60_000 });
  });

  it('counts DATA from the 354, and the idle timeout still applies inside it', () => {
    const steady = { ...idle, lastActivity: 599_000, dataSince: 0 };
    expect(checkDeadline(steady, LIMITS, 600_000)).toEqual({ kind: 'expired', limit: 'data', afterMs: 600_000 });
    const silent = { ...idle, lastActivity: 10_000, dataSince: 0 };
    expect(checkDeadline(silent, LIMITS, 310_000)).toEqual({ kind: 'expired', limit: 'idle', afterMs: 300_000 });
  });

  it('never expires while sendas owes the reply', () => {
    expect(checkDeadline({ ...idle, busy: true, lineSince: 0 }, LIMITS, 10 ** 9)).toEqual({ kind: 'busy' });
  });
});

describe('failureDelayMs', () => {
  it('doubles from the first delay and stops at the maximum', () => {
    const limits = { delayMs: 1_000, maxDelayMs: 15_000 };
    expect([1, 2, 3, 4, 5, 6, 40].map((n) => failureDelayMs(n, limits))).toEqual([1_000, 2_000, 4_000, 8_000, 15_000, 15_000, 15_000]);
    expect(failureDelayMs(0, limits)).toBe(0);
    expect(failureDelayMs(5, { delayMs: 0, maxDelayMs: 15_000 })).toBe(0);
  });
});

describe('AuthLimiter', () => {
  afterEach(() => vi.useRealTimers());
  const limits = { ...DEFAULTS.limits.auth, failuresPerAddress: 3, failuresPerLogin: 5, windowMs: 60_000, lockoutMs: 120_000 };

  it('locks the address at the threshold for the lockout time, and not another address', async () => {
    vi.useFakeTimers();
    const auth = new AuthLimiter(limits);
    const outcomes = [];
    for (let i = 0; i < 3; i++) outcomes.push(await auth.failed('192.0.2.7', `user${i}`));
    expect(outcomes.map((o) => o.started)).toEqual([[], [], [{ scope: 'address', failures: 3 }]]);
    expect(await auth.lockedOut('192.0.2.7', 'crm')).toMatchObject({ scope: 'address', retryMs: 120_000 });
    expect(await auth.lockedOut('192.0.2.8', 'crm')).toBeUndefined();
    vi.advanceTimersByTime(119_000);
    expect(await auth.lockedOut('192.0.2.7', 'crm')).toMatchObject({ scope: 'address' });
    vi.advanceTimersByTime(2_000);
    expect(await auth.lockedOut('192.0.2.7', 'crm')).toBeUndefined();
  });

  it('forgets failures older than the window', async () => {
    vi.useFakeTimers();
    const auth = new AuthLimiter(limits);
    await auth.failed('192.0.2.7', 'crm');
    await auth.failed('192.0.2.7', 'crm');
    vi.advanceTimersByTime(61_000);
    expect((await auth.failed('192.0.2.7', 'crm')).started).toEqual([]);
    expect(await auth.lockedOut('192.0.2.7', 'crm')).toBeUndefined();
  });

  it('locks a login guessed from several addresses, from every address', async () => {
    const auth = new AuthLimiter(limits);
    for (const address of ['192.0.2.1', '192.0.2.1', '192.0.2.2', '192.0.2.2']) await auth.failed(address, 'crm');
    const fifth = await auth.failed('192.0.2.3', 'crm');
    expect(fifth.started).toEqual([{ scope: 'login', failures: 5 }]);
    expect(fifth.failures).toBe(5);
    expect(await auth.lockedOut('198.51.100.1', 'crm')).toMatchObject({ scope: 'login' });
    expect(await auth.lockedOut('198.51.100.1', 'alice-desk')).toBeUndefined();
  });

  it('answers a lockout with 454 4.7.0 naming the limit, never the login', () => {
    expect(lockoutError({ scope: 'address', retryMs: 899_000 }).replyText).toBe('4.7.0 Too many failed logins from this address (limits.auth.failures_per_address); try again in 15 minutes');
    expect(lockoutError({ scope: 'login', retryMs: 10_000 }).replyText).toBe('4.7.0 Too many failed logins for this login (limits.auth.failures_per_login); try again in 1 minute');
  });
});

describe('ConnectionCounts', () => {
  it('counts per address and in total, and counts out only sessions it let in', () => {
    const counts = new ConnectionCounts();
    const limits = { connections: 3, connectionsPerAddress: 2 };
    expect(counts.admit('a', '192.0.2.1', limits)).toBeUndefined();
    expect(counts.admit('b', '192.0.2.1', limits)).toBeUndefined();
    expect(counts.admit('c', '192.0.2.1', limits)).toBe('connections_per_address');
    expect(counts.admit('d', '192.0.2.2', limits)).toBeUndefined();
    expect(counts.admit('e', '192.0.2.3', limits)).toBe('connections');
    counts.release('c');
    counts.release('e');
    expect(counts.open).toBe(3);
    counts.release('a');
    expect(counts.admit('f', '192.0.2.1', limits)).toBeUndefined();
    for (const id of ['b', 'd', 'f', 'f']) counts.release(id);
    expect(counts.open).toBe(0);
  });
});

describe('SessionTracker', () => {
  function tracked(limits: LimitsConfig = LIMITS) {
    const clock = new ManualClock();
    const closed: string[] = [];
    const hits: LimitName[] = [];
    let busy = false;
    const conn: ConnectionHandle = { sessionId: 's1', remoteAddress: '192.0.2.7', busy: () => busy, close421: (text) => closed.push(text) };
    const tracker = new SessionTracker(conn, limits, clock, (l) => hits.push(l));
    return { clock, closed, hits, tracker, setBusy: (b: boolean) => (busy = b) };
  }

  it('cuts a line fed a byte at a time at the command deadline, not later', async () => {
    const { clock, closed, hits, tracker } = tracked();
    tracker.reply(220);
    for (let t = 0; t < 59; t++) {
      await clock.advance(1_000);
      tracker.input(true);
    }
    expect(closed).toEqual([]);
    await clock.advance(2_000);
    expect(closed).toEqual(['4.4.2 Command timeout: the command line did not end within 1m (limits.command_timeout); closing the connection']);
    expect(hits).toEqual(['command_timeout']);
  });

  it('keeps a session that answers in time, and closes it when it goes silent', async () => {
    const { clock, closed, tracker } = tracked();
    for (let i = 0; i < 10; i++) {
      await clock.advance(250_000);
      tracker.input(false);
      tracker.line();
      tracker.reply(250);
    }
    expect(closed).toEqual([]);
    await clock.advance(300_000);
    expect(closed).toEqual(['4.4.2 Idle timeout: nothing from the client for 5m (limits.idle_timeout); closing the connection']);
  });

  it('does not time out while sendas owes the reply', async () => {
    const { clock, closed, tracker, setBusy } = tracked();
    tracker.line();
    setBusy(true);
    await clock.advance(3_600_000);
    expect(closed).toEqual([]);
    setBusy(false);
    tracker.reply(250);
    await clock.advance(300_000);
    expect(closed).toHaveLength(1);
  });

  it('limits DATA as a whole, however steadily it arrives', async () => {
    const { clock, closed, tracker } = tracked();
    tracker.reply(354);
    for (let i = 0; i < 599; i++) {
      await clock.advance(1_000);
      tracker.input(false);
    }
    expect(closed).toEqual([]);
    await clock.advance(1_000);
    expect(closed[0]).toMatch(/^4\.4\.2 Data timeout: the message did not end within 10m/);
  });

  it('refuses the command after the last allowed error, and an accepted message starts the count again', () => {
    const { closed, hits, tracker } = tracked();
    for (const code of [550, 503, 354, 250, 501, 501]) {
      expect(tracker.line()).toBe(true);
      tracker.reply(code);
    }
    expect(tracker.line()).toBe(true);
    tracker.reply(500);
    expect(tracker.line()).toBe(false);
    expect(closed).toEqual(['4.7.0 Too many errors in this session (limits.errors_per_session: 3); closing the connection']);
    expect(hits).toEqual(['errors_per_session']);
  });

  it('stops its timer when the session ends', async () => {
    const { clock, closed, tracker } = tracked();
    tracker.stop();
    await clock.advance(3_600_000);
    expect(closed).toEqual([]);
    expect(clock.pending).toBe(0);
  });
});

describe('limits config', () => {
  it('reads durations and counts, and names the key of a typo', () => {
    const s = snapshotOf(undefined, 'limits: {connections_per_address: 5, command_timeout: 30s, auth: {lockout: 1h}}');
    expect(s.limits).toMatchObject({ connectionsPerAddress: 5, commandTimeoutMs: 30_000, connections: 500, auth: { lockoutMs: 3_600_000, failuresPerAddress: 10 } });
    expect(() => snapshotOf(undefined, 'limits: {auth: {failures_per_adress: 5}}')).toThrow(/limits\.auth\.failures_per_adress.*did you mean "failures_per_address"/s);
  });

  it('is a setting a reload applies, not one that needs a restart', () => {
    const change = diffSnapshots(snapshotOf(), snapshotOf(undefined, 'limits: {auth: {failures_per_address: 3}}'));
    expect(change.settings).toEqual(['limits']);
    expect(change.needsRestart).toEqual([]);
  });
});
