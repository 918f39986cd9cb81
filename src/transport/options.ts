import { isIP } from 'node:net';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import type { Account } from '../identity/account.js';

const AUTH_METHOD = { plain: 'PLAIN', login: 'LOGIN', 'cram-md5': 'CRAM-MD5' } as const;

export interface TransportTuning {
  /** EHLO name: the relay's host name. */
  readonly helo: string;
  readonly maxConnections: number;
  readonly connectionTimeoutMs: number;
  readonly socketTimeoutMs: number;
}

export const DEFAULT_TUNING: Omit<TransportTuning, 'helo'> = {
  maxConnections: 5,
  connectionTimeoutMs: 30_000,
  socketTimeoutMs: 120_000,
};

/** nodemailer pool options for one upstream account. Pure, so the mapping is unit-tested. */
export function poolOptions(account: Account, tuning: TransportTuning, route?: { host: string; port: number }): SMTPPool.Options {
  const { server } = account;
  const host = route?.host ?? server.host;
  const auth = server.auth === 'none' ? undefined : { user: account.username ?? '', pass: account.password?.reveal() ?? '' };
  return {
    pool: true,
    host,
    port: route?.port ?? server.port,
    secure: server.security === 'tls',
    requireTLS: server.security === 'starttls',
    ignoreTLS: server.security === 'none',
    ...(auth ? { auth, authMethod: AUTH_METHOD[server.auth as keyof typeof AUTH_METHOD] } : {}),
    tls: {
      rejectUnauthorized: server.tls.rejectUnauthorized,
      ...(server.tls.ca ? { ca: server.tls.ca } : {}),
      // SNI needs a host name; an IP address as servername is refused by Node
      ...(isIP(host) === 0 ? { servername: host } : {}),
    },
    name: tuning.helo,
    maxConnections: tuning.maxConnections,
    maxMessages: Infinity,
    connectionTimeout: tuning.connectionTimeoutMs,
    greetingTimeout: tuning.connectionTimeoutMs,
    socketTimeout: tuning.socketTimeoutMs,
    logger: false,
    debug: false,
  };
}
