import type { ErrorKind } from './relay-error.js';

/** Every ErrorKind, for the metric series that must exist before the first failure (ops/metrics.ts). */
export const ERROR_KINDS = [
  'config',
  'access',
  'client',
  'policy',
  'message',
  'auth',
  'tls',
  'network',
  'throttled',
  'quota',
  'sender',
  'recipient',
  'size',
  'refused',
  'internal',
] as const satisfies readonly ErrorKind[];

// a kind added to ErrorKind but not here fails to compile
const _everyKind: Record<Exclude<ErrorKind, (typeof ERROR_KINDS)[number]>, never> = {};
void _everyKind;

/** Kinds a client can meet at SMTP time from sendas itself (listener and reception), before any upstream is asked. */
export const SMTP_TIME_KINDS: readonly ErrorKind[] = ['access', 'client', 'policy', 'message', 'config', 'quota', 'internal'];

/** Kinds a queued delivery attempt can end with: everything but the client-session ones. */
export const DELIVERY_KINDS: readonly ErrorKind[] = ERROR_KINDS.filter((k) => k !== 'access' && k !== 'client');
