import { getDomain } from 'tldts';

/**
 * DMARC's organizational domain (RFC 7489 §3.2): the registrable domain by the Public Suffix
 * List, as mailauth finds it (tldts, private suffixes included). A name under a public suffix
 * alone ("localhost", "example") is its own.
 */
export function organizationalDomain(domain: string): string {
  const d = domain.toLowerCase().replace(/\.$/, '');
  return getDomain(d, { allowPrivateDomains: true }) ?? d;
}

export type AlignmentMode = 'relaxed' | 'strict';

/**
 * Whether an authenticated domain (SPF's MAIL FROM domain, DKIM's d=) is aligned with the From
 * domain: strict needs the same name, relaxed the same organizational domain (RFC 7489 §3.1).
 */
export function isAligned(fromDomain: string, authDomain: string, mode: AlignmentMode): boolean {
  const from = fromDomain.toLowerCase().replace(/\.$/, '');
  const auth = authDomain.toLowerCase().replace(/\.$/, '');
  if (mode === 'strict') return from === auth;
  return organizationalDomain(from) === organizationalDomain(auth);
}
