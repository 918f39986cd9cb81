import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { decryptWith, encryptTo } from '../config/age.js';
import type { SecretKey } from '../config/secret-key.js';
import type { Logger } from '../log.js';
import type { Cluster } from './cluster.js';

/** An access token as the token provider keeps it; times are epoch ms on the caller's clock. */
export interface SharedAccessToken {
  readonly token: string;
  readonly expiresAt: number;
  readonly obtainedAt: number;
}

/** A rotated refresh token; `origin` is the digest of the YAML refresh token it descends from. */
export interface SharedRefreshToken {
  readonly token: string;
  readonly origin: string | null;
  /** Epoch ms (caller's clock) of the rotation: the newer of this and the state_dir file wins. */
  readonly updatedAt: number;
}

export interface SharedTokensOptions {
  readonly cluster: Cluster;
  readonly logger: Logger;
  /** The current snapshot's age key: nothing is shared without one (tokens never go to Redis in clear). */
  readonly secretKey: () => SecretKey | undefined;
  /** The token provider's clock (epoch ms); converted to the replicas' shared clock for what is stored. */
  readonly now?: () => number;
  /** The replicas' shared clock (Redis' TIME, `cluster.store.now()` by default); tests give their own clock for both. */
  readonly sharedNow?: () => number;
  /** The lock's life: longer than a token request may take (its fetch gives up after 15 s). */
  readonly lockTtlMs?: number;
  /** How long a replica waits for the lock holder's token before it asks on its own. */
  readonly waitMs?: number;
}

/** What a refresh settles: an access token, and whether the caller will take one found in Redis. */
export interface Flight<T extends SharedAccessToken> {
  /** A token from Redis (or another replica's refresh) that serves the caller. */
  readonly accept: (token: SharedAccessToken) => boolean;
  /** Asks the token endpoint; runs at most once per flight. */
  readonly refresh: () => Promise<T>;
  /** Stored with PX = remaining life minus this. */
  readonly marginMs: number;
}

const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
// newest wins: a replica pushing the token of its state directory never overwrites a later rotation
const KEEP_NEWEST = `local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, v = pcall(cjson.decode, cur)
  if ok and type(v) == 'table' and type(v.updated) == 'number' and v.updated > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1`;
const FIRST_POLL_MS = 25;
const MAX_POLL_MS = 200;

/**
 * OAuth tokens shared by the replicas (`cluster:`): the access token under its cache key, so one
 * token request serves every replica, and an account's rotated refresh token, so every replica
 * refreshes with the newest. Both are age-encrypted to the config's key; key names are digests
 * of the cache key, so no account or app is named in Redis.
 *
 * A refresh is one flight across the replicas: the replica that takes the lock (SET NX PX) asks
 * the token endpoint; the others poll for its token (25 ms, doubling to 200 ms). Polling rather
 * than pub/sub: a refresh happens about once an hour per account and lasts a few hundred ms, so
 * the few GETs of a wait cost less than a second connection per replica in subscriber mode, with
 * reconnects and missed messages of its own; and a poll notices at once when Redis goes away or
 * the holder gives up (lock gone without a token: the waiter takes the lock itself). After
 * `waitMs` (the lock's life) a waiter asks on its own.
 *
 * Redis down (or no key): every call answers "nothing shared" and the caller refreshes on its own,
 * as one relay does; no exception reaches the caller.
 */
export class SharedTokens {
  private readonly now: () => number;
  private readonly sharedNow: () => number;
  private readonly lockTtlMs: number;
  private readonly waitMs: number;
  private readonly release: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private readonly keepNewest: (keys: readonly string[], args: readonly (string | number)[]) => Promise<unknown>;
  private unreadable = false;

  constructor(private readonly opts: SharedTokensOptions) {
    this.now = opts.now ?? Date.now;
    this.sharedNow = opts.sharedNow ?? (() => opts.cluster.store.now());
    this.lockTtlMs = opts.lockTtlMs ?? 20_000;
    this.waitMs = opts.waitMs ?? this.lockTtlMs;
    this.release = opts.cluster.store.script('sendasTokenRelease', RELEASE, 1);
    this.keepNewest = opts.cluster.store.script('sendasTokenKeepNewest', KEEP_NEWEST, 1);
  }

  /** The key tokens are encrypted to, when sharing is possible now. */
  private key(): SecretKey | undefined {
    return this.opts.cluster.up ? this.opts.secretKey() : undefined;
  }

  /** One token for every replica: from Redis, from the lock holder's refresh, or (holder) from `refresh`. */
  async flight<T extends SharedAccessToken>(cacheKey: string, f: Flight<T>): Promise<T | SharedAccessToken> {
    if (!this.key()) return f.refresh();
    const found = await this.readAccess(cacheKey);
    if (found && f.accept(found)) return found;
    let waited = 0;
    for (;;) {
      const owner = `${this.opts.cluster.nodeId}:${randomBytes(9).toString('base64url')}`;
      const taken = await this.opts.cluster.store.run((r) => r.set(this.name('lock', cacheKey), owner, 'PX', this.lockTtlMs, 'NX'));
      if (taken === undefined) return f.refresh();
      if (taken === 'OK') return this.holding(cacheKey, owner, f);
      const outcome = await this.waitForHolder(cacheKey, f.accept, this.waitMs - waited);
      waited += outcome.waited;
      if (outcome.token) return outcome.token;
      // Redis gone, or the holder takes too long: on its own, as a single relay would
      if (outcome.why !== 'free') return f.refresh();
    }
  }

  /** The newest rotated refresh token of an account; undefined when none is shared (or it can't be read). */
  async readRefresh(cacheKey: string): Promise<SharedRefreshToken | undefined> {
    const key = this.key();
    if (!key) return undefined;
    const raw = await this.opts.cluster.store.run((r) => r.get(this.name('rt', cacheKey)));
    const value = parse(raw);
    if (!value || typeof value.updated !== 'number' || !(typeof value.origin === 'string' || value.origin === null)) return undefined;
    const token = await this.open(value.age, key);
    return token === undefined ? undefined : { token, origin: value.origin, updatedAt: this.fromShared(value.updated) };
  }

  /** Shares a refresh token unless a newer one is shared already (no expiry: it is the account's until the next rotation). */
  async writeRefresh(cacheKey: string, rt: SharedRefreshToken): Promise<void> {
    const key = this.key();
    if (!key) return;
    const updated = this.toShared(rt.updatedAt);
    const value = JSON.stringify({ origin: rt.origin, updated, age: await encryptTo(key.recipient, rt.token) });
    await this.opts.cluster.store.run(() => this.keepNewest([this.name('rt', cacheKey)], [value, updated]));
  }

  private async holding<T extends SharedAccessToken>(cacheKey: string, owner: string, f: Flight<T>): Promise<T | SharedAccessToken> {
    try {
      // the previous holder may have written its token between our read and our lock
      const found = await this.readAccess(cacheKey);
      if (found && f.accept(found)) return found;
      const token = await f.refresh();
      await this.writeAccess(cacheKey, token, f.marginMs);
      return token;
    } finally {
      // only our own lock: one that outlived its TTL may be another replica's by now
      await this.opts.cluster.store.run(() => this.release([this.name('lock', cacheKey)], [owner]));
    }
  }

  private async waitForHolder(cacheKey: string, accept: (t: SharedAccessToken) => boolean, boundMs: number): Promise<{ token?: SharedAccessToken; why?: 'down' | 'free' | 'timeout'; waited: number }> {
    const key = this.opts.secretKey();
    let waited = 0;
    let delay = FIRST_POLL_MS;
    while (waited < boundMs) {
      await sleep(delay);
      waited += delay;
      delay = Math.min(delay * 2, MAX_POLL_MS);
      const seen = await this.opts.cluster.store.run((r) => r.mget(this.name('at', cacheKey), this.name('lock', cacheKey)));
      if (seen === undefined || !key) return { why: 'down', waited };
      const token = await this.openAccess(seen[0] ?? null, key);
      if (token && accept(token)) return { token, waited };
      if (seen[1] === null) return { why: 'free', waited };
    }
    return { why: 'timeout', waited };
  }

  private async readAccess(cacheKey: string): Promise<SharedAccessToken | undefined> {
    const key = this.key();
    if (!key) return undefined;
    const raw = await this.opts.cluster.store.run((r) => r.get(this.name('at', cacheKey)));
    return this.openAccess(raw ?? null, key);
  }

  private async writeAccess(cacheKey: string, token: SharedAccessToken, marginMs: number): Promise<void> {
    const key = this.key();
    const ttl = Math.floor(token.expiresAt - marginMs - this.now());
    if (!key || ttl <= 0) return;
    const value = JSON.stringify({ exp: this.toShared(token.expiresAt), got: this.toShared(token.obtainedAt), age: await encryptTo(key.recipient, token.token) });
    await this.opts.cluster.store.run((r) => r.set(this.name('at', cacheKey), value, 'PX', ttl));
  }

  private async openAccess(raw: string | null, key: SecretKey): Promise<SharedAccessToken | undefined> {
    const value = parse(raw);
    if (!value || typeof value.exp !== 'number' || typeof value.got !== 'number') return undefined;
    const token = await this.open(value.age, key);
    return token === undefined ? undefined : { token, expiresAt: this.fromShared(value.exp), obtainedAt: this.fromShared(value.got) };
  }

  private async open(ciphertext: unknown, key: SecretKey): Promise<string | undefined> {
    if (typeof ciphertext !== 'string') return undefined;
    try {
      return await decryptWith(key, ciphertext);
    } catch (err) {
      // another replica with another key (a rollout of a new key): this one asks on its own and overwrites
      if (!this.unreadable) this.opts.logger.warn({ key: key.where, err: { message: (err as Error).message } }, 'cluster: a shared OAuth token cannot be decrypted with this replica\'s key; it asks for its own (give every replica the same secret key)');
      this.unreadable = true;
      return undefined;
    }
  }

  /** The Redis key: a digest of the cache key, which names the account and the app. */
  private name(kind: 'at' | 'rt' | 'lock', cacheKey: string): string {
    return this.opts.cluster.store.key('oauth', kind, createHash('sha256').update(cacheKey).digest('base64url'));
  }

  /** Times in Redis are on the shared clock, so a replica whose own clock is off reads them right. */
  private toShared(t: number): number {
    return t + (this.sharedNow() - this.now());
  }

  private fromShared(t: number): number {
    return t - (this.sharedNow() - this.now());
  }
}

function parse(raw: string | null | undefined): Record<string, unknown> | undefined {
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
