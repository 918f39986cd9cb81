import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Cluster } from '../cluster/cluster.js';
import type { FailureStore, FailureStoreFactory } from './auth-limits.js';

/**
 * Failed logins counted with the other replicas (`cluster:`): rate-limiter-flexible's
 * RateLimiterRedis on the cluster's ioredis connection, the keys under the cluster's prefix
 * (`sendas:auth:address:192.0.2.7`, `sendas:auth:login:crm`), so failures on any replica add up to
 * one lockout that every replica enforces.
 *
 * While Redis is away (not ready, a command failed or timed out) the library's insurance limiter
 * answers instead: a memory limiter whose threshold is this replica's share (`cluster.share`: the
 * threshold divided by the replicas last seen), set again before each call as the registry's
 * count moves. No exception reaches the session, and the failed login gets its 535 and delay as
 * always. Back from an outage, the counts are Redis' again; a lockout started locally during the
 * outage is still enforced here until it ends (the local failures themselves are not carried over).
 */
export function sharedFailureStore(cluster: Cluster): FailureStoreFactory {
  return ({ keyPrefix, scope, points, duration: windowSec }) => {
    // Redis' expiry is in whole seconds (the library floors it): a window or lockout under 1 s would never expire there
    const duration = wholeSeconds(windowSec);
    const local = new LocalShare({ keyPrefix, points: cluster.share(points), duration });
    const shared = new RateLimiterRedis({
      storeClient: cluster.store.redis,
      // ioredis: its own multi()/pttl() calls, not node-redis'
      useRedisPackage: false,
      // a command while ioredis is not "ready" goes to the insurance at once instead of failing on the socket
      rejectIfRedisNotReady: true,
      keyPrefix: cluster.store.key('auth', scope),
      points,
      duration,
      insuranceLimiter: local,
    });
    const share = () => (local.points = cluster.share(points));
    const store: FailureStore = {
      async get(key, options) {
        share();
        const res = await shared.get(key, options);
        if (res && lockedOut(res)) return res;
        return local.lockout(String(key)) ?? res;
      },
      penalty(key, n, options) {
        share();
        return shared.penalty(key, n, options);
      },
      block(key, secDuration, options) {
        share();
        return shared.block(key, wholeSeconds(secDuration), options);
      },
    };
    return store;
  };
}

/** The insurance limiter, which also remembers the lockouts it started (Redis never saw them). */
class LocalShare extends RateLimiterMemory {
  private readonly locks = new Map<string, number>();

  override block(key: string | number, secDuration: number): Promise<RateLimiterRes> {
    const now = Date.now();
    // an outage under attack: the expired ones go before the map grows
    if (this.locks.size >= 10_000) for (const [k, until] of this.locks) if (until <= now) this.locks.delete(k);
    this.locks.set(String(key), now + secDuration * 1000);
    return super.block(key, secDuration);
  }

  /** A lockout this replica started while Redis was away, while it lasts. */
  lockout(key: string): RateLimiterRes | undefined {
    const until = this.locks.get(key);
    if (until === undefined) return undefined;
    const left = until - Date.now();
    if (left <= 0) {
      this.locks.delete(key);
      return undefined;
    }
    return new RateLimiterRes(0, left, this.points + 1);
  }
}

function wholeSeconds(sec: number): number {
  return Math.max(1, Math.ceil(sec));
}

// as AuthLimiter reads an answer: the count reached its limiter's threshold
function lockedOut(res: RateLimiterRes): boolean {
  return res.consumedPoints > 0 && res.remainingPoints <= 0;
}
