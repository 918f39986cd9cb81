import type { Readable } from 'node:stream';
import { classifyUpstreamError, type UpstreamContext } from '../errors/classify.js';
import { RelayError } from '../errors/relay-error.js';
import type { Account } from '../config/account.js';
import type { TransportPools } from '../transport/pools.js';
import type { UpstreamThread } from '../transport/upstream-thread.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';

export interface RecipientRefusal {
  readonly recipient: string;
  readonly error: RelayError;
}

export interface DeliveryOutcome {
  readonly accepted: readonly string[];
  readonly refused: readonly RecipientRefusal[];
  /** The upstream's reply to the end of DATA. */
  readonly upstreamReply: string;
}

export function upstreamContext(account: Account, route?: { host: string; port: number }): UpstreamContext {
  return {
    serverName: account.server.name,
    host: route?.host ?? account.server.host,
    port: route?.port ?? account.server.port,
    login: account.server.auth === 'none' ? undefined : account.username,
    passwordPath: account.passwordPath,
  };
}

/**
 * Sends one message through the account's pool: while the client waits (delivery: passthrough),
 * or for a queue entry's attempt.
 * Resolves with per-recipient results when the upstream took the message for at least one
 * recipient; rejects with a classified RelayError otherwise.
 */
export async function deliverNow(
  pools: TransportPools,
  account: Account,
  envelope: UpstreamEnvelope,
  message: Readable,
  route?: { host: string; port: number },
): Promise<DeliveryOutcome> {
  if (account.server.type === 'graph') {
    // Graph is one HTTP call for all recipients; its refusals are already classified
    const outcome = await pools.graph(account, envelope, message);
    return { accepted: outcome.accepted, refused: [], upstreamReply: outcome.upstreamReply };
  }
  // straight to the pool transport, without Mail.sendMail's compile steps (see TransportPools.send)
  return outcomeOf(pools.send(account, route, envelope, message), upstreamContext(account, route));
}

/** deliverNow for a message held in memory, through the upstream worker thread (see UpstreamThread). */
export function deliverInThread(thread: UpstreamThread, account: Account, envelope: UpstreamEnvelope, bytes: Buffer, route?: { host: string; port: number }): Promise<DeliveryOutcome> {
  return outcomeOf(thread.send(account, route, envelope, bytes), upstreamContext(account, route));
}

/** nodemailer's answer, or its failure, as per-recipient results or a classified RelayError. */
async function outcomeOf(sending: Promise<{ accepted?: unknown[]; rejectedErrors?: unknown[]; response?: string }>, ctx: UpstreamContext): Promise<DeliveryOutcome> {
  try {
    const info = await sending;
    const refused = (info.rejectedErrors ?? []).map((e) => {
      const error = classifyUpstreamError(e, ctx);
      return { recipient: (e as { recipient?: string }).recipient ?? '', error };
    });
    return { accepted: (info.accepted ?? []).map(String), refused, upstreamReply: info.response ?? '' };
  } catch (err) {
    const e = err as { command?: string; rejectedErrors?: unknown[] };
    if (e?.command === 'RCPT TO' && Array.isArray(e.rejectedErrors) && e.rejectedErrors.length > 0) {
      // every recipient refused: still a per-recipient answer, not a failure of the upstream
      const refused = e.rejectedErrors.map((r) => ({ recipient: (r as { recipient?: string }).recipient ?? '', error: classifyUpstreamError(r, ctx) }));
      return { accepted: [], refused, upstreamReply: '' };
    }
    throw classifyUpstreamError(err, ctx);
  }
}
