import { asArray, isRecord } from './raw.js';
import type { Decryption } from './decrypt.js';
import { KEY_FILE_ENV } from './secret-key.js';
import { isLoopbackHost } from './relations.js';
import { secretAt, type SecretReference } from './secret-refs.js';
import type { ReportIssue } from './issues.js';
import type { ConfigWarning } from './types.js';

/** What may be said of a Redis URL: never its password. */
export interface RedisWhere {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly password: boolean;
  readonly db: number;
}

/** Reads redis:// and rediss:// URLs as ioredis does (host, port 6379, /db); undefined for anything else. */
export function redisWhere(url: string): RedisWhere | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') return undefined;
  const db = Number(u.pathname.replace(/^\//, '') || 0);
  return { host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', port: Number(u.port || 6379), tls: u.protocol === 'rediss:', password: u.password !== '', db: Number.isInteger(db) ? db : 0 };
}

/** "10.0.0.5:6379 (TLS, password)" — for the start log and sendas check. */
export function describeRedis(url: string): string {
  const w = redisWhere(url);
  if (!w) return '(not a redis:// or rediss:// URL)';
  const host = w.host.includes(':') ? `[${w.host}]` : w.host;
  return `${host}:${w.port}${w.db ? `/${w.db}` : ''} (${w.tls ? 'TLS' : 'no TLS'}, ${w.password ? 'password' : 'no password'})`;
}

/**
 * cluster.redis.url, resolved: a URL ioredis can use (else an error at the key path, without the
 * value), and a warning when a password would cross the network in clear.
 */
export function checkCluster(raw: Record<string, unknown>, secrets: readonly SecretReference[], at: ReportIssue): ConfigWarning[] {
  const url = secretAt(secrets)('cluster.redis.url')?.reveal();
  if (url === undefined || !isRecord(raw.cluster)) return [];
  const where = redisWhere(url);
  if (!where) {
    at(['cluster', 'redis', 'url'], 'must be a redis:// or rediss:// URL such as redis://redis:6379 or rediss://:PASSWORD@redis.example:6380 (the value is not shown: it may hold a password)');
    return [];
  }
  if (where.password && !where.tls && !isLoopbackHost(where.host)) {
    return [{ path: 'cluster.redis.url', message: `the Redis password goes to ${where.host} in clear: use rediss:// (TLS)` }];
  }
  return [];
}

/**
 * `cluster:` with an OAuth server but no secret key: the relay starts, but its OAuth tokens are
 * not shared (they would be in Redis in clear), so each replica refreshes on its own and a
 * provider that rotates refresh tokens strictly can refuse the replicas' older ones.
 */
export function clusterTokenWarnings(raw: Record<string, unknown>, decryption: Decryption | undefined): ConfigWarning[] {
  if (!isRecord(raw.cluster) || decryption?.key) return [];
  if (!asArray(raw.servers).some((s) => isRecord(s) && isRecord(s.oauth))) return [];
  return [
    {
      path: 'secrets.key_file',
      message: `cluster is set but no secret key is: OAuth tokens are not shared between the replicas (each asks the token endpoint on its own); set secrets.key_file (or ${KEY_FILE_ENV}) so they are shared, encrypted to it`,
    },
  ];
}