import { randomUUID } from 'node:crypto';
import type { Headers } from '@zone-eu/mailsplit';
import { formatMailbox, parseFromHeader, parseMailboxList, decodeHeaderBytes } from '../mail/mailbox.js';
import type { AlignmentPlan, HeaderFacts } from './align.js';

type HeaderLine = { key: string; line: string };

function valueOf(line: HeaderLine): string {
  return line.line.slice(line.line.indexOf(':') + 1);
}

/** Reads what alignment needs from a parsed header section. */
export function readHeaderFacts(headers: Headers): HeaderFacts {
  const lines = headers.getList() as HeaderLine[];
  const of = (key: string) => lines.filter((l) => l.key === key).map(valueOf);
  return {
    from: parseFromHeader(of('from')),
    hasReplyTo: of('reply-to').some((v) => v.trim() !== ''),
    senders: of('sender').map((v) => parseMailboxList(decodeHeaderBytes(v).replace(/\r?\n[ \t]/g, ' '))[0]?.address),
  };
}

/** Applies an alignment plan to the header section. Body bytes are never touched. */
export function applyAlignment(headers: Headers, plan: AlignmentPlan): void {
  if (plan.writeFrom) {
    // update() replaces in place, or adds at the top when the message had no From at all
    headers.update('From', formatMailbox(plan.from));
  }
  if (plan.addReplyTo) {
    headers.add('Reply-To', formatMailbox(plan.addReplyTo), indexAfter(headers, 'from'));
  }
  if (plan.dropSender) headers.remove('Sender');
}

export interface TraceInfo {
  readonly queueId: string;
  readonly clientHelo: string;
  readonly clientAddress: string;
  readonly clientHostname: string | undefined;
  readonly relayHostname: string;
  readonly authenticated: boolean;
  readonly secure: boolean;
  readonly recipients: readonly string[];
  readonly receivedAt: Date;
  /** Domain for a generated Message-ID: the final From's domain. */
  readonly messageIdDomain: string;
}

/**
 * Adds the trace header every MTA adds (RFC 5321 §4.4), and the Message-ID and Date that
 * RFC 5322 requires when the client left them out. Existing ones are never replaced: threading
 * in the customer's mailbox depends on the client's Message-ID.
 */
export function addTraceHeaders(headers: Headers, trace: TraceInfo): void {
  if (!headers.hasHeader('message-id')) {
    headers.add('Message-ID', `<${randomUUID()}@${trace.messageIdDomain}>`, headers.getList().length);
  }
  if (!headers.hasHeader('date')) {
    headers.add('Date', rfc5322Date(trace.receivedAt), headers.getList().length);
  }
  headers.add('Received', receivedValue(trace), 0);
}

export function receivedValue(t: TraceInfo): string {
  // RFC 3848 protocol names: the A says the client logged in, the S that it used TLS
  const protocol = `ESMTP${t.secure ? 'S' : ''}${t.authenticated ? 'A' : ''}`;
  // the client's name comes from its PTR record: DNS names can carry any byte, a header line can't
  const client = `${(t.clientHostname && sanitizeHelo(t.clientHostname)) || 'unknown'} [${t.clientAddress}]`;
  // name the recipient only when there is one, as Postfix does: a list would leak Bcc addresses
  const forClause = t.recipients.length === 1 ? ` for <${t.recipients[0]}>` : '';
  return `from ${sanitizeHelo(t.clientHelo)} (${client}) by ${t.relayHostname} (sendas) with ${protocol} id ${t.queueId}${forClause}; ${rfc5322Date(t.receivedAt)}`;
}

function sanitizeHelo(helo: string): string {
  return helo.replace(/[^\x21-\x7e]/g, '').replace(/[()]/g, '') || 'unknown';
}

function indexAfter(headers: Headers, key: string): number {
  const lines = headers.getList() as HeaderLine[];
  const i = lines.findIndex((l) => l.key === key);
  return i < 0 ? lines.length : i + 1;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** "Sat, 21 Nov 2026 05:11:00 +0000": RFC 5322 date-time in UTC (Date#toUTCString says "GMT", an obsolete zone). */
export function rfc5322Date(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}
