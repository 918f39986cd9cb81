import { RateLimiterMemory, type RateLimiterRes } from 'rate-limiter-flexible';
import type { AuthLimitsConfig } from '../config/types.js';
import { RelayError } from '../errors/relay-error.js';

/**
 * Failed logins, counted per client address and per login name in a fixed window, as Postfix's
 * anvil and ZoneMTA count them. The counts live in a rate-limiter-flexible limiter: memory for one
 * relay, Redis for replicas sharing one count (`shared-auth-failures.ts`), through
 * `FailureStoreFactory`. Each answer is held to the threshold of the limiter that gave it (its
 * `points`), so a replica's local share while Redis is away needs nothing here.
 */
export type FailureStore = Pick<RateLimiterMemory, 'get' | 'penalty' | 'block'>;
export type FailureStoreFactory = (opts: { keyPrefix: string; scope: LockoutScope; points: number; duration: number }) => FailureStore;

export const memoryFailureStore: FailureStoreFactory = (opts) => new RateLimiterMemory(opts);

export type LockoutScope = 'address' | 'login';

export interface Lockout {
  readonly scope: LockoutScope;
  readonly retryMs: number;
}

export interface FailureOutcome {
  /** How long to hold back the 535. */
  readonly delayMs: number;
  /** Failures in the window: the higher of the address's and the login's count. */
  readonly failures: number;
  /** Lockouts this failure started (each one is logged once). */
  readonly started: readonly { readonly scope: LockoutScope; readonly failures: number }[];
}

// one login name is one key; a name longer than any real login is still only one key
const MAX_LOGIN_KEY = 256;

/**
 * The wait before the answer to the n-th failure in the window: `delay`, doubled for each failure
 * before it, never more than `max_delay` — the growing pause of Postfix's smtpd_error_sleep_time
 * and Dovecot's auth_penalty, bounded so that a session is never held long. Pure.
 */
export function failureDelayMs(failures: number, limits: Pick<AuthLimitsConfig, 'delayMs' | 'maxDelayMs'>): number {
  if (failures <= 0 || limits.delayMs <= 0) return 0;
  return Math.min(limits.maxDelayMs, limits.delayMs * 2 ** Math.min(failures - 1, 30));
}

/** The 454 for a locked address or login; it names neither the login nor whether it exists. */
export function lockoutError(lockout: Lockout): RelayError {
  const minutes = Math.max(1, Math.ceil(lockout.retryMs / 60_000));
  const what = lockout.scope === 'address' ? 'from this address' : 'for this login';
  const key = lockout.scope === 'address' ? 'failures_per_address' : 'failures_per_login';
  return new RelayError('access', { code: 454, enhanced: '4.7.0' }, `Too many failed logins ${what} (limits.auth.${key}); try again in ${minutes} minute${minutes === 1 ? '' : 's'}`);
}

export class AuthLimiter {
  private readonly byAddress: FailureStore;
  private readonly byLogin: FailureStore;

  /** A limiter counts with the window it was made with: a reload that changes limits.auth starts new counts (guard.ts). */
  constructor(
    readonly limits: AuthLimitsConfig,
    factory: FailureStoreFactory = memoryFailureStore,
  ) {
    const duration = limits.windowMs / 1000;
    this.byAddress = factory({ keyPrefix: 'sendas-auth-address', scope: 'address', points: limits.failuresPerAddress, duration });
    this.byLogin = factory({ keyPrefix: 'sendas-auth-login', scope: 'login', points: limits.failuresPerLogin, duration });
  }

  /** A lockout in force for this address or this login, checked before the password is. */
  async lockedOut(address: string, login: string): Promise<Lockout | undefined> {
    const [a, l] = await Promise.all([this.byAddress.get(address), this.byLogin.get(loginKey(login))]);
    // the threshold is the answering store's (its points): the full one, or a replica's share while
    // the shared store is away; block() stores points + 1, and only a failure that reached it gets there
    if (a && reached(a)) return { scope: 'address', retryMs: a.msBeforeNext };
    if (l && reached(l)) return { scope: 'login', retryMs: l.msBeforeNext };
    return undefined;
  }

  /** Counts a failed login; the one that reaches a threshold starts that lockout. */
  async failed(address: string, login: string): Promise<FailureOutcome> {
    const key = loginKey(login);
    const [a, l] = await Promise.all([this.byAddress.penalty(address), this.byLogin.penalty(key)]);
    const started: { scope: LockoutScope; failures: number }[] = [];
    const lockoutSec = this.limits.lockoutMs / 1000;
    if (reached(a)) {
      await this.byAddress.block(address, lockoutSec);
      started.push({ scope: 'address', failures: a.consumedPoints });
    }
    if (reached(l)) {
      await this.byLogin.block(key, lockoutSec);
      started.push({ scope: 'login', failures: l.consumedPoints });
    }
    const failures = Math.max(a.consumedPoints, l.consumedPoints);
    return { delayMs: failureDelayMs(failures, this.limits), failures, started };
  }
}

// two sessions failing at the same moment may both pass the threshold; each starts (renews) the lockout
function reached(res: RateLimiterRes): boolean {
  return res.consumedPoints > 0 && res.remainingPoints <= 0;
}

function loginKey(login: string): string {
  return login.length > MAX_LOGIN_KEY ? login.slice(0, MAX_LOGIN_KEY) : login;
}
