import { performance } from 'node:perf_hooks';
import { formatDuration } from '../config/duration.js';
import type { LimitsConfig } from '../config/types.js';
import { checkDeadline, type DeadlineVerdict, type TimeLimit } from './deadline.js';
import type { ConnectionEvents, ConnectionHandle } from './smtp-server-adapter.js';

/** The limit names of `limits:`, as the metric label and the reply name them. */
export type LimitName =
  | 'connections'
  | 'connections_per_address'
  | 'idle_timeout'
  | 'command_timeout'
  | 'data_timeout'
  | 'errors_per_session'
  | 'recipients_per_message'
  | 'auth_lockout';

/** Sessions at once, in total and per client address (Postfix: smtpd_client_connection_count_limit). O(1) per connection. */
export class ConnectionCounts {
  private total = 0;
  private readonly perAddress = new Map<string, number>();
  /** Only sessions that were let in are counted out again (a refused one is closed too). */
  private readonly admitted = new Map<string, string>();

  /** Counts the session in, or names the limit it would exceed. */
  admit(sessionId: string, address: string, limits: Pick<LimitsConfig, 'connections' | 'connectionsPerAddress'>): LimitName | undefined {
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (fromAddress >= limits.connectionsPerAddress) return 'connections_per_address';
    if (this.total >= limits.connections) return 'connections';
    this.total++;
    this.perAddress.set(address, fromAddress + 1);
    this.admitted.set(sessionId, address);
    return undefined;
  }

  release(sessionId: string): void {
    const address = this.admitted.get(sessionId);
    if (address === undefined) return;
    this.admitted.delete(sessionId);
    this.total--;
    const left = (this.perAddress.get(address) ?? 1) - 1;
    if (left > 0) this.perAddress.set(address, left);
    else this.perAddress.delete(address);
  }

  get open(): number {
    return this.total;
  }
}

const TIMEOUT_TEXT: Record<TimeLimit, (d: string) => string> = {
  idle: (d) => `4.4.2 Idle timeout: nothing from the client for ${d} (limits.idle_timeout); closing the connection`,
  command: (d) => `4.4.2 Command timeout: the command line did not end within ${d} (limits.command_timeout); closing the connection`,
  data: (d) => `4.4.2 Data timeout: the message did not end within ${d} (limits.data_timeout); closing the connection`,
};

/** Time for the deadlines: monotonic ms and a cancellable timer (the delivery Clock's shape, so tests drive both alike). */
export interface SessionClock {
  now(): number;
  setTimer(fn: () => void, ms: number): { cancel(): void };
}

/** The real one; its timers don't keep the process alive. */
export const systemSessionClock: SessionClock = {
  now: () => performance.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

/**
 * One session's deadlines and error count, fed by the smtp-server patch's events. Per chunk it
 * only notes the time; a timer is re-armed only when a deadline moves earlier (a line left
 * unfinished), and a timer that fires early just looks again.
 */
export class SessionTracker implements ConnectionEvents {
  private lastActivity: number;
  private lineSince: number | undefined;
  private dataSince: number | undefined;
  private errors = 0;
  private timer: { cancel(): void } | undefined;
  private armedFor = Infinity;
  private stopped = false;

  constructor(
    private readonly conn: ConnectionHandle,
    private readonly limits: LimitsConfig,
    private readonly clock: SessionClock,
    private readonly hit: (limit: LimitName) => void,
  ) {
    this.lastActivity = clock.now();
    this.schedule();
  }

  input(partialLine: boolean): void {
    const t = this.clock.now();
    this.lastActivity = t;
    if (partialLine && this.lineSince === undefined && this.dataSince === undefined) {
      this.lineSince = t;
      this.schedule();
    }
  }

  line(): boolean {
    this.lineSince = undefined;
    // as Postfix's smtpd_hard_error_limit: the command after the last allowed error is refused
    if (this.errors < this.limits.errorsPerSession || this.stopped) return true;
    this.hit('errors_per_session');
    this.conn.close421(`4.7.0 Too many errors in this session (limits.errors_per_session: ${this.limits.errorsPerSession}); closing the connection`);
    return false;
  }

  reply(code: number): void {
    this.lastActivity = this.clock.now();
    if (code === 354) {
      this.dataSince = this.lastActivity;
    } else {
      // an accepted message starts the count afresh ("errors without delivering mail", as Postfix counts)
      if (this.dataSince !== undefined && code < 400) this.errors = 0;
      this.dataSince = undefined;
    }
    if (code === 421) return this.stop();
    if (code >= 400) this.errors++;
    // a reply only moves the idle deadline later, and the data deadline it may start is no earlier
    // unless data_timeout is the shorter: an armed timer still comes first and looks again when it
    // fires, so most replies skip the verdict (one per reply was measurable at a connection per message)
    if (this.timer !== undefined && !(code === 354 && this.limits.dataTimeoutMs < this.limits.idleTimeoutMs)) return;
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    const verdict: DeadlineVerdict = checkDeadline(
      { busy: this.conn.busy(), lastActivity: this.lastActivity, lineSince: this.lineSince, dataSince: this.dataSince },
      this.limits,
      now,
    );
    // busy: the reply that ends it schedules again; look again later in case none comes
    if (verdict.kind === 'busy') return this.arm(now + this.limits.idleTimeoutMs, now);
    if (verdict.kind === 'wait') return this.arm(verdict.until, now);
    this.stop();
    this.hit(`${verdict.limit}_timeout`);
    this.conn.close421(TIMEOUT_TEXT[verdict.limit](formatDuration(verdict.afterMs)));
  }

  private arm(at: number, now: number): void {
    if (this.timer !== undefined && this.armedFor <= at) return;
    this.timer?.cancel();
    this.armedFor = at;
    this.timer = this.clock.setTimer(() => {
      this.timer = undefined;
      this.armedFor = Infinity;
      this.schedule();
    }, Math.max(0, at - now));
  }
}
