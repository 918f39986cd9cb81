import type { Headers } from '@zone-eu/mailsplit';
import type { ConfigSnapshot } from '../config/types.js';
import { RelayError } from '../errors/relay-error.js';
import { resolveSender, type Resolution } from './identity.js';
import { planAlignment, headerFromAddress, type AlignmentPlan } from './align.js';
import { addTraceHeaders, applyAlignment, readHeaderFacts, type TraceInfo } from './rewrite.js';

export interface MessageDecision {
  readonly resolution: Resolution;
  readonly plan: AlignmentPlan;
  /** The From address the client wrote (for the log line), if any. */
  readonly headerFrom: string | undefined;
  /** Decoded Subject, for queue listings and failure notices. */
  readonly subject: string | undefined;
  /** The Message-ID as it leaves (the client's, or the one added), without angle brackets: the trace and the history find the message by it. */
  readonly messageId: string | undefined;
}

export interface SessionFacts {
  readonly envelopeFrom: string | undefined;
  readonly login: string | undefined;
}

/**
 * The header stage of the pipeline: reads the header section, resolves who sends, decides the
 * alignment and edits the headers accordingly. Throws a RelayError when the message is refused.
 */
export function processHeaders(snapshot: ConfigSnapshot, headers: Headers, session: SessionFacts, trace: Omit<TraceInfo, 'messageIdDomain'>): MessageDecision {
  const facts = readHeaderFacts(headers);
  const headerFrom = headerFromAddress(facts.from);
  if (headerFrom instanceof RelayError) throw headerFrom;

  const resolution = resolveSender(snapshot, { headerFrom, envelopeFrom: session.envelopeFrom, login: session.login });
  if (resolution instanceof RelayError) throw resolution;

  const plan = planAlignment(snapshot.policy, resolution, facts, session.envelopeFrom);
  if (plan instanceof RelayError) throw plan;

  applyAlignment(headers, plan);
  addTraceHeaders(headers, { ...trace, messageIdDomain: plan.from.address.slice(plan.from.address.lastIndexOf('@') + 1) });
  const subject = headers.getFirst('subject') || undefined;
  return { resolution, plan, headerFrom, subject, messageId: messageIdOf(headers.getFirst('message-id')) };
}

/** `<id@host>` → `id@host`; undefined for an empty header. */
export function messageIdOf(value: string): string | undefined {
  const v = value.replace(/\s+/g, ' ').trim();
  const inner = v.startsWith('<') && v.includes('>') ? v.slice(1, v.indexOf('>')).trim() : v;
  return inner === '' ? undefined : inner;
}
