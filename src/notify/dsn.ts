/**
 * Failure notices ("bounces"): an RFC 3464 delivery status notification, carried in an
 * RFC 6522 multipart/report, for a message the relay accepted but could not deliver.
 *
 *   multipart/report; report-type=delivery-status
 *   ├─ text/plain; charset=utf-8        what happened, in words, for the sender
 *   ├─ message/delivery-status          the machine-readable report (RFC 3464 §2), 7bit
 *   └─ text/rfc822-headers              the failed message's header section, never its body
 *
 * The module is pure: it builds bytes and sends nothing. The caller submits the notice with
 * the null envelope sender (MAIL FROM:<>, RFC 5321 §4.5.5) so a notice can never bounce back,
 * and never composes one for a message whose own envelope sender was null.
 *
 * Everything that comes from the failed message or from the upstream (addresses, subject,
 * upstream replies, host names) is untrusted: it is reduced to one line before it reaches a
 * header or a delivery-status field, so no CR/LF in it can start a line of its own.
 */
import { randomBytes } from 'node:crypto';
import { domainToASCII } from 'node:url';
import { FixedEncodingNode, MimeNode } from '../mail/nodemailer-adapter.js';

export interface FailedRecipient {
  /** The envelope recipient. */
  address: string;
  /**
   * Enhanced status code (RFC 3463), "5.1.1", or for a message that expired in the queue the
   * last temporary code, "4.4.1". Written as given (Action is always `failed`); a value that is
   * not a 4.x.x/5.x.x code is written as 5.0.0.
   */
  status: string;
  /** The upstream's reply verbatim ("550 5.1.1 No such user"), multi-line replies joined. */
  diagnostic?: string;
  /** The human sentence sendas logged for this recipient; goes into the text part only. */
  reason: string;
  /**
   * What the mail administrator can change (the classification's fix, e.g. "grant Send As: …").
   * In the text part only, in a paragraph addressed to the administrator: the notice goes to the
   * envelope sender, which for a relay in front of contact-center software is that software's own
   * address, run by the people who forward it to their mail administrator — never to a customer,
   * who is a recipient. A fix names keys and commands, never a secret.
   */
  fix?: string;
  /** The upstream host name: `Remote-MTA: dns; <name>`. */
  remoteMta?: string;
  /** When the relay last tried this recipient: `Last-Attempt-Date`. */
  lastAttemptAt?: Date;
}

export interface NoticeInput {
  /** This relay's host name: `Reporting-MTA: dns; <name>`. */
  reportingMta: string;
  /** The relay's queue id for the failed message: `X-Sendas-Queue-ID`, and named in the text. */
  queueId: string;
  /** When the relay accepted the failed message: `Arrival-Date`. */
  arrivalDate: Date;
  /** The notice's From, e.g. the default server's account named "Mail Delivery System". */
  from: { name: string; address: string };
  /** The failed message's envelope sender, who receives the notice. Must not be empty. */
  to: string;
  /** At least one. */
  recipients: FailedRecipient[];
  /** The failed message's header section, raw bytes, with or without the final blank line. */
  originalHeaders: Buffer;
  /** The failed message's decoded subject. */
  originalSubject?: string;
  /** Set when the message expired in the queue, e.g. "2 days and 7 attempts". */
  gaveUpAfter?: string;
  /** The notice's Date. */
  date: Date;
  /** Domain of the notice's Message-ID. */
  messageIdDomain: string;
}

/** Subject prefix of every notice (Postfix's wording, which people and filters know). */
export const NOTICE_SUBJECT = 'Undelivered Mail Returned to Sender';

/**
 * Composes the complete notice (header section and body, CRLF line ends) as bytes ready to be
 * submitted. Throws a TypeError for input no notice can be made from (no recipient of the
 * notice, no failed recipient, an invalid date): those are bugs in the caller.
 */
export async function composeNotice(input: NoticeInput): Promise<Buffer> {
  const to = clean(input.to);
  if (to === '' || to === '<>') throw new TypeError('a failure notice needs a recipient: never bounce a message with a null envelope sender');
  if (input.recipients.length === 0) throw new TypeError('a failure notice needs at least one failed recipient');
  const date = requireDate(input.date, 'date');
  const arrivalDate = requireDate(input.arrivalDate, 'arrivalDate');
  const reportingMta = hostName(input.reportingMta);
  const queueId = clean(input.queueId);
  const subject = clean(input.originalSubject ?? '');

  const root = new MimeNode('multipart/report; report-type=delivery-status', { hostname: reportingMta });
  // Objects rather than strings: MimeNode does not run an object's address through the
  // address parser, so an untrusted address can never turn into two recipients.
  root.setHeader('From', { name: clean(input.from.name), address: clean(input.from.address) });
  root.setHeader('To', { name: '', address: to });
  root.setHeader('Subject', subject ? `${NOTICE_SUBJECT}: ${subject}` : NOTICE_SUBJECT);
  root.setHeader('Date', date);
  root.setHeader('Message-ID', `<${randomBytes(12).toString('hex')}@${idDomain(input.messageIdDomain)}>`);
  root.setHeader('MIME-Version', '1.0');
  // RFC 3834: a notice is an automatic response, so no vacation responder answers it
  root.setHeader('Auto-Submitted', 'auto-replied');
  root.setHeader('X-Sendas-Queue-ID', queueId);

  root.createChild('text/plain; charset=utf-8').setContent(humanText(input, reportingMta, queueId));

  root.appendChild(new FixedEncodingNode('message/delivery-status', '7bit')).setContent(deliveryStatus(input, reportingMta, queueId, arrivalDate));

  const headers = headerSection(input.originalHeaders);
  root.appendChild(new FixedEncodingNode(headers.contentType, headers.encoding)).setContent(headers.bytes);

  return root.build();
}

/** Part 1: what happened and what to do, for a person. */
function humanText(input: NoticeInput, reportingMta: string, queueId: string): string {
  const paragraphs: string[] = [];
  paragraphs.push(`This is the mail relay at ${reportingMta}.\nYour message could not be delivered to the following recipient(s):`);
  for (const r of input.recipients) {
    paragraphs.push(`  ${clean(r.address)}\n${wrap(clean(r.reason), '      ')}`);
  }
  const fixes = [...new Set(input.recipients.map((r) => clean(r.fix ?? '')).filter((f) => f !== ''))];
  if (fixes.length > 0) {
    paragraphs.push([wrap('For your mail administrator, what to change on the relay or the mail account:'), ...fixes.map((f) => wrap(`- ${f}`, '  '))].join('\n'));
  }
  const gaveUpAfter = clean(input.gaveUpAfter ?? '');
  if (gaveUpAfter) {
    paragraphs.push(
      wrap(
        `The relay kept trying to deliver your message for ${gaveUpAfter} and has now given up. The receiving side kept reporting a temporary problem, so it may work if you send the message again later.`,
      ),
    );
  }
  const subject = clean(input.originalSubject ?? '');
  paragraphs.push(
    wrap(
      `Please check the address and the reason given for each recipient. If you believe the message should have been delivered, forward this notice to your mail administrator: they can look it up by its queue ID, ${queueId}${subject ? `, and its subject, "${subject}"` : ''}.`,
    ),
  );
  paragraphs.push(wrap('The headers of your message are attached below. Its body is not included, so keep your own copy if you want to send it again.'));
  return paragraphs.join('\n\n').replace(/\n/g, '\r\n') + '\r\n';
}

/** Part 2: the RFC 3464 §2.2 per-message fields, then one §2.3 block per recipient. */
function deliveryStatus(input: NoticeInput, reportingMta: string, queueId: string, arrivalDate: Date): string {
  const blocks: string[][] = [];
  // per-message-fields: Reporting-MTA, Arrival-Date, then extension fields (RFC 3464 §2.2)
  blocks.push([`Reporting-MTA: dns; ${ascii(reportingMta)}`, `Arrival-Date: ${rfc5322Date(arrivalDate)}`, `X-Sendas-Queue-ID: ${ascii(queueId)}`]);
  for (const r of input.recipients) {
    const block = [`Final-Recipient: ${finalRecipient(clean(r.address))}`, 'Action: failed', `Status: ${statusCode(r.status)}`];
    const remote = clean(r.remoteMta ?? '');
    if (remote) block.push(`Remote-MTA: dns; ${ascii(hostName(remote))}`);
    const diagnostic = clean(r.diagnostic ?? '');
    if (diagnostic) block.push(`Diagnostic-Code: smtp; ${ascii(diagnostic)}`);
    if (r.lastAttemptAt && !Number.isNaN(r.lastAttemptAt.getTime())) block.push(`Last-Attempt-Date: ${rfc5322Date(r.lastAttemptAt)}`);
    blocks.push(block);
  }
  return blocks.map((block) => block.map(foldLong).join('\r\n') + '\r\n').join('\r\n');
}

/**
 * Part 3: the original header section, byte for byte except for line ends (CRLF, as SMTP
 * needs: a bare LF or a bare CR becomes CRLF) and the blank line that ends it (dropped, with
 * anything after it: the failed message's body is never sent back, even if a caller passes
 * more than the header section).
 * Transfer encoding:
 * - 7bit when it is all ASCII;
 * - 8bit when it has 8-bit bytes (raw UTF-8 headers, RFC 6532, or legacy Latin-1): kept as they
 *   are, since the relay already passes 8-bit messages upstream unchanged. charset=utf-8 is
 *   declared when the bytes are valid UTF-8; for anything else no charset is claimed;
 * - quoted-printable when a line could not travel in 8bit at all (NUL, a line over 998
 *   octets): lossless, and still readable.
 */
function headerSection(raw: Buffer): { bytes: Buffer; contentType: string; encoding: '7bit' | '8bit' | 'quoted-printable' } {
  // latin1 maps byte <-> char one to one, so the bytes come back out unchanged
  let text = raw.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
  const end = text.startsWith('\r\n') ? 0 : text.indexOf('\r\n\r\n');
  if (end >= 0) text = text.slice(0, end);
  text = text.replace(/(?:\r\n)+$/, '');
  const bytes = Buffer.from(text === '' ? '' : `${text}\r\n`, 'latin1');
  const lines = text.split('\r\n');
  const fitsIn8bit = (line: string): boolean => line.length <= 998 && !line.includes('\0');
  if (!lines.every(fitsIn8bit)) return { bytes, contentType: 'text/rfc822-headers', encoding: 'quoted-printable' };
  if (!/[\x80-\xff]/.test(text)) return { bytes, contentType: 'text/rfc822-headers', encoding: '7bit' };
  const utf8 = isUtf8(bytes);
  return { bytes, contentType: utf8 ? 'text/rfc822-headers; charset=utf-8' : 'text/rfc822-headers', encoding: '8bit' };
}

function isUtf8(bytes: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * `rfc822; addr` for an ASCII address; an SMTPUTF8 address is written as RFC 6533
 * `utf-8; <utf-8-addr-xtext>`, since a message/delivery-status body is US-ASCII.
 */
function finalRecipient(address: string): string {
  if (/^[\x21-\x7e]+$/.test(address)) return `rfc822; ${address}`;
  let out = '';
  for (const ch of address) {
    const cp = ch.codePointAt(0)!;
    // QCHAR: printable ASCII except SP, "+", "=", "\"; everything else is \x{HEX}
    const qchar = cp >= 0x21 && cp <= 0x7e && ch !== '+' && ch !== '=' && ch !== '\\';
    out += qchar ? ch : `\\x{${cp.toString(16).toUpperCase().padStart(2, '0')}}`;
  }
  return `utf-8; ${out}`;
}

/** A delivery-status field value must be ASCII: anything else becomes \x{HEX} (RFC 6533's notation). */
function ascii(text: string): string {
  return text.replace(/[^\x20-\x7e]/gu, (ch) => `\\x{${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(2, '0')}}`);
}

function statusCode(status: string): string {
  const trimmed = status.trim();
  return /^[45]\.\d{1,3}\.\d{1,3}$/.test(trimmed) ? trimmed : '5.0.0';
}

/**
 * Fields are written on one line; only a line that would break the 998-octet limit of a 7bit
 * body (an enormous upstream reply) is folded, at spaces, as RFC 3464's header syntax allows.
 */
function foldLong(line: string): string {
  if (line.length <= 998) return line;
  const out: string[] = [];
  let rest = line;
  while (rest.length > 998) {
    let cut = rest.lastIndexOf(' ', 998);
    if (cut <= 0) cut = 997; // no space to fold at: split hard, the continuation starts with one
    out.push(rest.slice(0, cut));
    rest = ' ' + rest.slice(cut).replace(/^ /, '');
  }
  out.push(rest);
  return out.join('\r\n');
}

/**
 * Wraps a paragraph at 72 columns on spaces, every line starting with `indent`, so an ASCII
 * text part goes out as plain 7bit (MimeNode quoted-printables any line over 76).
 */
function wrap(text: string, indent = ''): string {
  const width = 72;
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  lines.push(indent + line);
  return lines.join('\n');
}

/** One line of text: every control character (CR and LF included) becomes a space. */
function clean(text: string): string {
  return text
    .replace(/[\x00-\x1f\x7f]+/g, ' ')
    .replace(/\s{2,}/g, ' ')
    .trim();
}

/** A host name for Reporting-MTA / Remote-MTA: an IDN as its A-label, anything else as given. */
function hostName(name: string): string {
  const host = clean(name);
  if (/^[\x21-\x7e]+$/.test(host)) return host;
  return domainToASCII(host) || host;
}

/** The Message-ID domain: ASCII, and nothing that could close the msg-id early. */
function idDomain(domain: string): string {
  const host = hostName(domain).replace(/[^A-Za-z0-9.\-[\]:]/g, '');
  return host || 'localhost';
}

function requireDate(value: Date, name: string): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw new TypeError(`a failure notice needs a valid ${name}`);
  return value;
}

/** RFC 5322 date-time in UTC, the form MimeNode writes for Date. */
function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}
