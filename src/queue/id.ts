import { randomBytes } from 'node:crypto';

const ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';

/**
 * A message's id: in the Received header, the SMTP reply, every log line and the queue file
 * names. 12 characters of base32 without look-alikes: unique enough, short enough to read over
 * the phone.
 */
export function newMessageId(): string {
  return [...randomBytes(12)].map((b) => ALPHABET[b % 32]).join('');
}
