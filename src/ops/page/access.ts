import { createHash, timingSafeEqual } from 'node:crypto';
import type { Secret } from '../../config/secret.js';

/**
 * Whether a request may see the status page under `http.token`. A browser can't be told to send a
 * Bearer header, but it asks for a user name and password after a Basic challenge and then sends
 * them with every request: the token is the password, any user name goes (ops name themselves).
 * A Bearer header works too, for curl and for proxies that add it.
 */
export function pageAuthorized(header: string | undefined, token: Secret): boolean {
  const bearer = /^Bearer +(\S+) *$/i.exec(header ?? '');
  if (bearer) return sameToken(bearer[1]!, token);
  const basic = /^Basic +([A-Za-z0-9+/=]+) *$/i.exec(header ?? '');
  if (!basic) return false;
  const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 && sameToken(decoded.slice(colon + 1), token);
}

/** The challenge a browser answers with its login dialog. */
export const PAGE_CHALLENGE = 'Basic realm="sendas", charset="UTF-8"';

/** Digests of equal length, so the comparison takes the same time whatever was sent. */
function sameToken(given: string, token: Secret): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token.reveal()).digest();
  return timingSafeEqual(a, b);
}
