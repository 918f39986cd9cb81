import { isIP } from 'node:net';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import type { Account } from '../config/account.js';

const AUTH_METHOD = { plain: 'PLAIN', login: 'LOGIN', 'cram-md5': 'CRAM-MD5' } as const;

export interface TransportTuning {
  /** EHLO name: the relay's host name. */
  readonly helo: string;
  /** A cap over every account's own `connections` (sendas test: 1); none by default. */
  readonly maxConnections?: number;
  readonly connectionTimeoutMs: number;
  readonly socketTimeoutMs: number;
}

export const DEFAULT_TUNING: Omit<TransportTuning, 'helo'> = {
  connectionTimeoutMs: 30_000,
  socketTimeoutMs: 120_000,
};

/** nodemailer's XOAUTH2 hook: (user, renew, callback) → access token. */
export type TokenProvisioner = (user: string, renew: boolean, cb: (err: Error | null, token?: string, expires?: number) => void) => void;

/** nodemailer pool options for one upstream account. Pure, so the mapping is unit-tested. */
export function poolOptions(account: Account, tuning: TransportTuning, route?: { host: string; port: number }, provision?: TokenProvisioner): SMTPPool.Options {
  const { server } = account;
  const host = route?.host ?? server.host;
  const auth =
    account.method === 'none'
      ? undefined
      : account.method === 'xoauth2'
        ? { type: 'OAuth2' as const, user: account.username ?? account.address, ...(provision ? { provisionCallback: provision } : {}) }
        : { user: account.username ?? '', pass: account.password?.reveal() ?? '' };
  return {
    pool: true,
    host,
    port: route?.port ?? server.port,
    secure: server.security === 'tls',
    requireTLS: server.security === 'starttls',
    ignoreTLS: server.security === 'none',
    ...(auth ? { auth: auth as SMTPPool.Options['auth'], ...(account.method in AUTH_METHOD ? { authMethod: AUTH_METHOD[account.method as keyof typeof AUTH_METHOD] } : {}) } : {}),
    tls: {
      rejectUnauthorized: server.tls.rejectUnauthorized,
      ...(server.tls.ca ? { ca: server.tls.ca } : {}),
      ...(server.tls.minVersion ? { minVersion: server.tls.minVersion } : {}),
      // SNI needs a host name; an IP address as servername is refused by Node
      ...(server.tls.servername ? { servername: server.tls.servername } : isIP(host) === 0 ? { servername: host } : {}),
    },
    ...(server.proxy ? { proxy: server.proxy } : {}),
    name: tuning.helo,
    // the account's own limit (a provider's, e.g. Microsoft 365's 3): more connections would be refused
    maxConnections: Math.min(tuning.maxConnections ?? Infinity, server.connections),
    maxMessages: Infinity,
    connectionTimeout: tuning.connectionTimeoutMs,
    greetingTimeout: tuning.connectionTimeoutMs,
    socketTimeout: tuning.socketTimeoutMs,
    logger: false,
    debug: false,
  };
}
