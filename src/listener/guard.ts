import { setTimeout as sleep } from 'node:timers/promises';
import type { AuthLimitsConfig, LimitsConfig } from '../config/types.js';
import { RelayError } from '../errors/relay-error.js';
import type { Logger } from '../log.js';
import type { CLIENT_LIMITS, LOCKOUT_SCOPES, RelayMetrics } from '../ops/metrics.js';
import { AuthLimiter, lockoutError, memoryFailureStore, type FailureStoreFactory } from './auth-limits.js';
import { sharedFailureStore } from './shared-auth-failures.js';
import { ConnectionCounts, SessionTracker, systemSessionClock, type LimitName, type SessionClock } from './session-limits.js';
import type { ConnectionObserver } from './smtp-server-adapter.js';
import type { LockoutScope } from './auth-limits.js';
import type { Cluster } from '../cluster/cluster.js';

// /metrics seeds a zero series for every limit and scope: one added here must be added there (ops/metrics.ts)
const _seeded: [Exclude<LimitName, (typeof CLIENT_LIMITS)[number]>, Exclude<LockoutScope, (typeof LOCKOUT_SCOPES)[number]>] extends [never, never] ? true : never = true;
void _seeded;

export interface GuardOptions {
  readonly logger: Logger;
  readonly metrics?: Pick<RelayMetrics, 'authFailures' | 'authLockouts' | 'clientLimits'>;
  /** For the session deadlines; the system's by default. */
  readonly clock?: SessionClock;
  /** Where failed logins are counted; memory unless relays share a store. */
  readonly failureStore?: FailureStoreFactory;
  /** `cluster:`: failed logins counted with the other replicas (Redis), each keeping its share while Redis is away. */
  readonly cluster?: Cluster;
}

/**
 * `limits:` for the listeners: guessing (AUTH failures slowed down, then locked out), flooding
 * (connections in total and per address) and slow or erring clients (deadlines, error count,
 * recipients). One guard serves every listener of a relay, so a client's connections and failures
 * count together whichever port they use. Every check is a map lookup; nothing touches the disk.
 */
export class ListenerGuard {
  private readonly counts = new ConnectionCounts();
  private readonly sessions = new Map<string, SessionTracker>();
  private readonly clock: SessionClock;
  private auth: AuthLimiter | undefined;
  private authKey = '';

  constructor(private readonly opts: GuardOptions) {
    this.clock = opts.clock ?? systemSessionClock;
  }

  /** At onConnect: counts the session in, or the 421 for the limit it would exceed. */
  admit(sessionId: string, address: string, limits: LimitsConfig): RelayError | undefined {
    const over = this.counts.admit(sessionId, address, limits);
    if (over === undefined) return undefined;
    this.hit(over, address);
    const text =
      over === 'connections_per_address'
        ? `Too many connections from ${address} (limits.connections_per_address: ${limits.connectionsPerAddress}); close some or try again later`
        : `Too many connections to this relay (limits.connections: ${limits.connections}); try again later`;
    return new RelayError('access', { code: 421, enhanced: '4.7.0' }, text);
  }

  /** At onClose, for every session, let in or not. */
  release(sessionId: string): void {
    this.counts.release(sessionId);
    this.sessions.get(sessionId)?.stop();
    this.sessions.delete(sessionId);
  }

  /** For observeConnections(): each connection's deadlines and error count, under its session's limits. */
  observer(limitsOf: (sessionId: string) => LimitsConfig): ConnectionObserver {
    return (conn) => {
      const tracker = new SessionTracker(conn, limitsOf(conn.sessionId), this.clock, (limit) => this.hit(limit, conn.remoteAddress));
      this.sessions.set(conn.sessionId, tracker);
      return tracker;
    };
  }

  /** At RCPT TO: the 452 once the envelope holds `recipients_per_message` (a repeated address only replaces its entry). */
  recipientRefusal(client: string, rcptTo: readonly { address: string }[], address: string, limits: LimitsConfig): RelayError | undefined {
    if (rcptTo.length < limits.recipientsPerMessage) return undefined;
    const key = address.toLowerCase();
    if (rcptTo.some((r) => r.address.toLowerCase() === key)) return undefined;
    this.hit('recipients_per_message', client);
    return new RelayError(
      'access',
      { code: 452, enhanced: '4.5.3' },
      `Too many recipients: at most ${limits.recipientsPerMessage} per message (limits.recipients_per_message); send the rest in another message`,
    );
  }

  /**
   * AUTH under the guessing limits: a locked address or login gets 454 whatever the password; a
   * wrong password is counted and its 535 held back a growing while. `verify` gives the login's
   * user, or undefined for a wrong password or unknown login.
   */
  async authenticate(address: string, login: string, limits: AuthLimitsConfig, verify: () => string | undefined): Promise<string | RelayError> {
    const auth = this.authLimiter(limits);
    const lockout = await auth.lockedOut(address, login).catch((err: unknown) => this.storeFailed(err));
    if (lockout) {
      this.hit('auth_lockout', address);
      return lockoutError(lockout);
    }
    const user = verify();
    if (user !== undefined) return user;
    this.opts.metrics?.authFailures.inc();
    const outcome = await auth.failed(address, login).catch((err: unknown) => this.storeFailed(err));
    for (const { scope, failures } of outcome?.started ?? []) {
      this.opts.metrics?.authLockouts.inc({ scope });
      const window = `${Math.round(limits.windowMs / 1000)}s`;
      // fail2ban matches the message (README "Security"): the address first, the client-chosen login last and quoted
      this.opts.logger.warn(
        { scope, address, login, failures, window, lockout: `${Math.round(limits.lockoutMs / 1000)}s` },
        `auth lockout scope=${scope} address=${address} failures=${failures} window=${window} login=${JSON.stringify(login)}`,
      );
    }
    if (outcome && outcome.delayMs > 0) await sleep(outcome.delayMs, undefined, { ref: false });
    return new RelayError('access', { code: 535, enhanced: '5.7.8' }, 'Authentication failed: unknown username or wrong password for this relay');
  }

  get openSessions(): number {
    return this.counts.open;
  }

  private authLimiter(limits: AuthLimitsConfig): AuthLimiter {
    // a reload that changes limits.auth starts new counts: the old ones were made against other thresholds
    const key = JSON.stringify(limits);
    if (!this.auth || this.authKey !== key) {
      const { failureStore, cluster } = this.opts;
      this.auth = new AuthLimiter(limits, failureStore ?? (cluster ? sharedFailureStore(cluster) : memoryFailureStore));
      this.authKey = key;
    }
    return this.auth;
  }

  /**
   * A store that can't answer must not lock everybody out: the login goes on unlimited, and it is
   * logged. (The shared store never gets here for an outage: its local share answers instead.)
   */
  private storeFailed(err: unknown): undefined {
    this.opts.logger.error({ err: { message: (err as Error).message } }, 'the failed-login counter is unavailable; logins are not limited');
    return undefined;
  }

  /** One log line per refusal or cut-off, as Postfix logs each (the auth lockout itself has its own line above). */
  private hit(limit: LimitName, client: string): void {
    this.opts.metrics?.clientLimits.inc({ limit });
    this.opts.logger.warn({ client, limit }, `client held to limits.${limit === 'auth_lockout' ? 'auth' : limit}`);
  }
}
