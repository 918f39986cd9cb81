import { X509Certificate } from 'node:crypto';
import { pairProblem } from './listeners.js';
import { asArray, isRecord } from './raw.js';
import type { Decryption } from './decrypt.js';
import { KEY_FILE_ENV } from './secret-key.js';
import { isLoopbackHost } from './relations.js';
import { secretAt, type SecretReference } from './secret-refs.js';
import type { ReportIssue } from './issues.js';
import type { Secret } from './secret.js';
import type { ClusterConfig, ConfigWarning } from './types.js';

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
export function describeRedis({ url, tls, sentinel }: Pick<ClusterConfig, 'url' | 'tls' | 'sentinel'>): string {
  const w = redisWhere(url.reveal());
  if (!w) return '(not a redis:// or rediss:// URL)';
  const how = w.tls ? ['TLS', ...(tls?.ca !== undefined ? ['CA from cluster.redis.tls.ca'] : []), ...(tls?.cert !== undefined ? ['client certificate'] : [])] : ['no TLS'];
  const bracket = (h: string) => (h.includes(':') ? `[${h}]` : h);
  const where = sentinel ? `master ${sentinel.master}${w.db ? ` db ${w.db}` : ''} through Sentinel ${sentinel.hosts.map((s) => `${bracket(s.host)}:${s.port}`).join(', ')}` : `${bracket(w.host)}:${w.port}${w.db ? `/${w.db}` : ''}`;
  return `${where} (${[...how, w.password ? 'password' : 'no password'].join(', ')})`;
}

/**
 * cluster.redis.url, resolved: a URL ioredis can use (else an error at the key path, without the
 * value), and a warning when a password would cross the network in clear.
 */
export function checkCluster(raw: Record<string, unknown>, secrets: readonly SecretReference[], at: ReportIssue): ConfigWarning[] {
  const secret = secretAt(secrets);
  const url = secret('cluster.redis.url')?.reveal();
  if (url === undefined || !isRecord(raw.cluster)) return [];
  const where = redisWhere(url);
  if (!where) {
    at(['cluster', 'redis', 'url'], 'must be a redis:// or rediss:// URL such as redis://redis:6379 or rediss://:PASSWORD@redis.example:6380 (the value is not shown: it may hold a password)');
    return [];
  }
  if (isRecord(raw.cluster.redis) && raw.cluster.redis.tls !== undefined) checkTls(where, clusterTls(secret), at);
  // through Sentinel the master is wherever the Sentinels say: off loopback unless they all are
  const sentinel = isRecord(raw.cluster.redis) && isRecord(raw.cluster.redis.sentinel) ? asArray(raw.cluster.redis.sentinel.hosts).map((h) => sentinelHost(String(h))) : undefined;
  const offLoopback = sentinel ? sentinel.some((s) => !isLoopbackHost(s.host)) : !isLoopbackHost(where.host);
  if (where.password && !where.tls && offLoopback) {
    return [{ path: 'cluster.redis.url', message: `the Redis password goes to ${sentinel ? 'the master the Sentinels name' : where.host} in clear: use rediss:// (TLS)` }];
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

/** cluster.redis.tls as the store hands it to ioredis: PEM text, the key kept a Secret. */
export function clusterTls(secret: (path: string) => Secret | undefined): NonNullable<ClusterConfig['tls']> {
  const ca = secret('cluster.redis.tls.ca')?.reveal();
  const cert = secret('cluster.redis.tls.cert')?.reveal();
  const key = secret('cluster.redis.tls.key');
  return { ...(ca !== undefined ? { ca } : {}), ...(cert !== undefined ? { cert } : {}), ...(key ? { key } : {}) };
}

/** tls: only with rediss://; a CA that parses; a client certificate with its own key. */
function checkTls(where: RedisWhere, tls: NonNullable<ClusterConfig['tls']>, at: ReportIssue): void {
  const path = (k?: string) => ['cluster', 'redis', 'tls', ...(k ? [k] : [])];
  if (!where.tls) {
    at(path(), 'applies to rediss:// only: cluster.redis.url is redis://, which does not use TLS');
    return;
  }
  if (tls.ca !== undefined) {
    try {
      new X509Certificate(tls.ca);
    } catch {
      at(path('ca'), 'must be the PEM certificate (-----BEGIN CERTIFICATE-----) of the CA that signed the Redis server\'s certificate');
    }
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    const [given, missing] = tls.cert === undefined ? ['key', 'cert'] : ['cert', 'key'];
    at(path(given), `needs ${missing}: beside it: a client certificate and its private key go together`);
    return;
  }
  if (tls.cert !== undefined && tls.key) {
    const problem = pairProblem(tls.cert, tls.key.reveal());
    if (problem) at(path('key'), problem);
  }
}

/** cluster.redis.sentinel as ioredis takes it: each Sentinel's host and port, the password kept a Secret. */
export function clusterSentinel(raw: { master: string; hosts: string[] }, secret: (path: string) => Secret | undefined): NonNullable<ClusterConfig['sentinel']> {
  const hosts = raw.hosts.map((h) => Object.freeze(sentinelHost(h)));
  const password = secret('cluster.redis.sentinel.password');
  return { master: raw.master, hosts: Object.freeze(hosts), ...(password ? { password } : {}) };
}

/** "10.0.0.5:26379" or "[fd00::6]:26379" → host and port. */
function sentinelHost(text: string): { host: string; port: number } {
  const at = text.lastIndexOf(':');
  return { host: text.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(text.slice(at + 1)) };
}
