import type { Account } from '../config/account.js';
import { RelayError } from '../errors/relay-error.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import { takeIfSmall } from '../mail/small-message.js';
import type { SendOutcome } from '../transport/send.js';
import type { Transport } from '../transport/transport.js';
import type { MessageInFlight } from './in-flight.js';
import type { OutcomeLog } from './outcome-log.js';
import type { MessageDecision } from './process.js';
import { sendSigned, signedBy, signingKeyFor } from './dkim.js';

/**
 * An account's limits as passthrough meets them: room in its daily budgets (counted and on disk
 * before the transaction), one of its `connections`, and what the outcome means for the account.
 */
export interface AccountGate {
  /** A quota RelayError (451 4.7.0, naming the budget) when the account has no room; else a ticket to hand the outcome to (undefined: not known). */
  admit(account: Account, recipients: number): Promise<RelayError | { done(outcome: SendOutcome | undefined): void }>;
}

/** delivery: passthrough — 250 only after the upstream accepted. */
export async function relayNow(m: MessageInFlight, decision: MessageDecision, transport: Transport, log: OutcomeLog, gate?: AccountGate): Promise<string> {
  const { msg } = m;
  const { account } = decision.resolution;
  log.debug({ id: msg.id, server: account.server.name, account: account.key }, 'upstream transaction started');

  const envelope = { from: decision.plan.envelopeFrom, to: msg.envelope.rcptTo, eightBit: msg.envelope.eightBit };
  let outcome: SendOutcome;
  let ticket: { done(outcome: SendOutcome | undefined): void } | undefined;
  const key = signingKeyFor(msg.snapshot, decision);
  try {
    if (gate) {
      const admitted = await Promise.race([gate.admit(account, envelope.to.length), m.failed]);
      if (admitted instanceof RelayError) return m.refuse(admitted);
      ticket = admitted;
    }
    outcome = await Promise.race([key ? sendSigned(transport, account, envelope, m, key) : send(transport, account, envelope, m), m.failed]);
  } catch (err) {
    // the upstream may still take it: the count stays
    ticket?.done(undefined);
    return m.refuse(err);
  }
  ticket?.done(outcome);
  if (!outcome.ok) return m.refuse(outcome.error);
  if (outcome.accepted.length === 0) m.stopReading();
  await m.clientDone;
  // smtp-server answers 552 itself; the upstream never got the end of the message
  if (m.tooLarge) return m.refuse(m.guard.tooLarge());

  traceOutcome(m, outcome, account, log);
  const base = { ...m.logFields(msg.stream.byteLength), upstreamReply: outcome.upstreamReply || outcome.refused[0]?.error.upstreamReply, ...(key ? { dkim: signedBy(key) } : {}) };
  const refusedText = outcome.refused.map((r) => `<${r.recipient}> ${r.error.upstreamReply ?? r.error.replyText}`).join('; ');
  if (outcome.accepted.length === 0) {
    // every recipient refused: pass on a temporary code if any refusal was temporary, so the client retries
    const first = outcome.refused.find((r) => r.error.temporary) ?? outcome.refused[0];
    const status = first?.error.status ?? { code: 550, enhanced: '5.1.1' };
    const err = new RelayError('recipient', status, `Upstream ${account.server.name} accepted none of the recipients: ${refusedText}`);
    log.record('refused', { ...base, ...err.toLog() });
    throw err;
  }
  if (outcome.refused.length > 0) {
    // SMTP has one reply per message: the accepted part was sent, so the reply is 250 and names the refused ones
    log.record('partial', { ...base, accepted: outcome.accepted.length, refused: outcome.refused.map((r) => ({ recipient: r.recipient, ...r.error.toLog() })) });
    return `2.0.0 Relayed as ${account.address} to ${outcome.accepted.length} of ${outcome.accepted.length + outcome.refused.length} recipients (id ${msg.id}); refused upstream: ${refusedText}`;
  }
  log.record('relayed', base);
  return `2.0.0 Relayed as ${account.address} through ${account.server.name} (id ${msg.id})`;
}

/** A trace line per recipient: relayed with the upstream's reply to the end of DATA, or refused with its reply to RCPT TO. */
function traceOutcome(m: MessageInFlight, outcome: Extract<SendOutcome, { ok: true }>, account: Account, log: OutcomeLog): void {
  const at = new Date().toISOString();
  const host = upstreamHost(account);
  const refused = outcome.refused.length > 0 ? new Map(outcome.refused.map((r) => [r.recipient.toLowerCase(), r.error])) : undefined;
  for (const recipient of m.msg.envelope.rcptTo) {
    const error = refused?.get(recipient.toLowerCase());
    if (!error) {
      log.traced(m.traceEvent('delivered', recipient, at, { host, reply: outcome.upstreamReply }));
      continue;
    }
    log.traced(m.traceEvent('refused', recipient, at, { host, reply: error.upstreamReply ?? `${error.status.code} ${error.replyText}`, kind: error.kind, ...(error.fix ? { fix: error.fix } : {}) }));
  }
}

/**
 * A small message (the usual case) for a password or no-auth account is read to its end and
 * handed whole to the upstream thread, so the main thread, which runs every client session,
 * is spared the upstream conversation; the upstream transaction then starts after the client's
 * DATA instead of beside it. A larger one, or one for XOAUTH2 or Graph, is streamed through the
 * main thread's pools as it arrives (memory stays flat).
 */
async function send(transport: Transport, account: Account, envelope: UpstreamEnvelope, m: MessageInFlight): Promise<SendOutcome> {
  if (!transport.takesWhole(account)) return transport.send(account, envelope, m.body);
  const taken = await Promise.race([takeIfSmall(m.body), m.failed]);
  return transport.send(account, envelope, 'bytes' in taken ? taken.bytes : taken.stream);
}

/** host:port of the account's server as configured (passthrough has no failover of its own), or Graph's URL. */
export function upstreamHost(account: Account): string {
  const { server } = account;
  return server.type === 'graph' ? server.graphUrl : `${server.host}:${server.port}`;
}
