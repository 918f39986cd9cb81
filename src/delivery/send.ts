import type { Readable } from 'node:stream';
import { classifyUpstreamError, type UpstreamContext } from '../errors/classify.js';
import { RelayError } from '../errors/relay-error.js';
import type { Account } from '../identity/account.js';
import type { TransportPools } from '../transport/pools.js';
import type { UpstreamEnvelope } from './envelope.js';

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
  const ctx = upstreamContext(account, route);
  if (account.server.type === 'graph') {
    // Graph is one HTTP call for all recipients; its refusals are already classified
    const outcome = await pools.graph(account, envelope, message);
    return { accepted: outcome.accepted, refused: [], upstreamReply: outcome.upstreamReply };
  }
  try {
    // straight to the pool transport, without Mail.sendMail's compile steps (see TransportPools.send)
    const info = await pools.send(account, route, envelope, message);
    const rejectedErrors = (info as { rejectedErrors?: unknown[] }).rejectedErrors ?? [];
    const refused = rejectedErrors.map((e) => {
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
