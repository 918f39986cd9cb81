import { domainToASCII } from 'node:url';

/**
 * The form two addresses are compared in: whole address lower-cased (the contract is
 * case-insensitive, local part included, as every provider we relay to treats it), and the domain
 * in its ASCII (punycode) form so that "info@bücher.example" matches "info@xn--bcher-kva.example".
 */
export function addressKey(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address.trim().toLowerCase();
  const local = address.slice(0, at).trim().toLowerCase();
  const domain = asciiDomain(address.slice(at + 1).trim());
  return `${local}@${domain}`;
}

/** The domain in ASCII form, lower-cased; the input unchanged (lower-cased) if it isn't a valid domain. */
export function asciiDomain(domain: string): string {
  const ascii = domainToASCII(domain.toLowerCase());
  return ascii === '' ? domain.toLowerCase() : ascii;
}

/**
 * The address as it goes on the wire: the local part as configured, the domain in ASCII, so a
 * configured IDN domain never forces SMTPUTF8 on the upstream.
 */
export function wireAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address;
  return `${address.slice(0, at)}@${asciiDomain(address.slice(at + 1))}`;
}

const LOCAL_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\uFFFF-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\uFFFF-]+)*$/;

/** A mailbox address we can put in a From header and a MAIL FROM: local@domain, no quoting needed. */
export function isPlainAddress(address: string): boolean {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return false;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (!LOCAL_ATOM.test(local) || local.length > 64) return false;
  const ascii = domainToASCII(domain.toLowerCase());
  return ascii !== '' && /^[a-z0-9-]+(\.[a-z0-9-]+)+$/.test(ascii);
}

/** True when the local part has non-ASCII characters: only deliverable with SMTPUTF8. */
export function needsSmtpUtf8(address: string): boolean {
  return /[^\x00-\x7f]/.test(address.slice(0, Math.max(0, address.lastIndexOf('@'))));
}
