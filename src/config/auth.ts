import { isRecord } from './raw.js';
import type { AuthMethod } from './types.js';

/** The methods that sign in with a password, so an account using one of them needs `password:`. */
export const PASSWORD_METHODS: ReadonlySet<AuthMethod> = new Set<AuthMethod>(['plain', 'login', 'cram-md5']);

/** auth when the YAML doesn't say: xoauth2 with an oauth block or for Graph, login with a username, else none. */
export function effectiveAuth(server: { auth?: unknown; oauth?: unknown; type?: unknown; username?: unknown }): AuthMethod {
  if (typeof server.auth === 'string') return server.auth.toLowerCase() as AuthMethod;
  if (isRecord(server.oauth) || (typeof server.type === 'string' && server.type.toLowerCase() === 'graph')) return 'xoauth2';
  return server.username !== undefined ? 'login' : 'none';
}
