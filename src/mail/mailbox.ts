import { addressparser } from './nodemailer-adapter.js';
import libmime from 'libmime';
import { isPlainAddress } from './address.js';

export interface Mailbox {
  /** Decoded display name ("" when none). */
  readonly name: string;
  readonly address: string;
}

export type FromHeader =
  | { readonly kind: 'missing' }
  /** Present but names no usable address: empty, "undisclosed-recipients:;", "Alice", "<>". */
  | { readonly kind: 'no-address'; readonly raw: string }
  | { readonly kind: 'single'; readonly mailbox: Mailbox }
  | { readonly kind: 'several'; readonly mailboxes: readonly Mailbox[] }
  /** More than one From header line: RFC 5322 allows exactly one. */
  | { readonly kind: 'repeated'; readonly count: number };

/**
 * Header values as mailsplit hands them over are "binary" strings (one char per byte). Raw
 * UTF-8 in headers is common from modern clients (RFC 6532), so the bytes are read as UTF-8;
 * anything that isn't valid UTF-8 falls back to Latin-1, which is what legacy clients meant.
 */
export function decodeHeaderBytes(binary: string): string {
  const bytes = Buffer.from(binary, 'binary');
  const utf8 = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  return utf8.includes('\uFFFD') ? bytes.toString('latin1') : utf8;
}

/** Unfolds and parses the value(s) of the From header lines. Groups are flattened into their members. */
export function parseFromHeader(values: readonly string[]): FromHeader {
  if (values.length === 0) return { kind: 'missing' };
  if (values.length > 1) return { kind: 'repeated', count: values.length };
  const raw = decodeHeaderBytes(values[0]!).replace(/\r?\n[ \t]/g, ' ').trim();
  const mailboxes = parseMailboxList(raw);
  if (mailboxes.length === 0) return { kind: 'no-address', raw };
  if (mailboxes.length === 1) return { kind: 'single', mailbox: mailboxes[0]! };
  return { kind: 'several', mailboxes };
}

export function parseMailboxList(raw: string): Mailbox[] {
  const parsed = addressparser(raw, { flatten: true }) as { name: string; address: string }[];
  return parsed
    .filter((m) => m.address && isPlainAddress(m.address))
    .map((m) => ({ name: decodeName(m.name), address: m.address }));
}

function decodeName(name: string): string {
  if (!name) return '';
  try {
    return libmime.decodeWords(name).trim();
  } catch {
    return name.trim();
  }
}

/**
 * A mailbox as a header value: `Name <addr>`, with the name quoted when it has specials and
 * encoded as RFC 2047 words when it isn't ASCII, so the header is valid for any upstream. Control
 * characters (CR, LF, NUL, tab …) become spaces first: a display name the client wrote, or one
 * decoded from an encoded word (=?utf-8?Q?x=0ABcc:_evil@x?=), can never start a header line.
 */
export function formatMailbox(mailbox: Mailbox): string {
  const name = mailbox.name.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  if (!name) return mailbox.address;
  return `${formatPhrase(name)} <${mailbox.address}>`;
}

function formatPhrase(name: string): string {
  if (/[^\x20-\x7e]/.test(name)) return libmime.encodeWord(name, 'Q', 52);
  // RFC 5322 atext plus spaces may go bare; anything else becomes a quoted-string
  if (/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$/.test(name) && !/^\s|\s$/.test(name)) return name;
  return `"${name.replace(/(["\\])/g, '\\$1')}"`;
}
