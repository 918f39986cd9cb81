import type { Readable } from 'node:stream';
import { classifyUpstreamError, type UpstreamContext } from '../errors/classify.js';
import type { RelayError } from '../errors/relay-error.js';
import type { Account } from '../config/account.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import type { TransportPools } from './pools.js';
import type { UpstreamThread } from './upstream-thread.js';

export interface RecipientRefusal {
  readonly recipient: string;
  readonly error: RelayError;
}

/**
 * What one upstream transaction came to. Transport does and reports: it never throws a
 * classified failure, so callers decide on a value instead of sorting exceptions.
 */
export type SendOutcome =
  /** The upstream took the message for at least one recipient (or refused them one by one). */
  | { readonly ok: true; readonly accepted: readonly string[]; readonly refused: readonly RecipientRefusal[]; /** Its reply to the end of DATA. */ readonly upstreamReply: string }
  /** Nothing was delivered; `error` says why, and whether the host counts as unreachable. */
  | { readonly ok: false; readonly error: RelayError };

export function upstreamContext(account: Account, route?: { host: string; port: number }): UpstreamContext {
  return {
    serverName: account.server.name,
    host: route?.host ?? account.server.host,
    port: route?.port ?? account.server.port,
    login: account.method === 'none' ? undefined : account.username ?? (account.method === 'xoauth2' ? account.address : undefined),
    passwordPath: credentialPath(account),
    method: account.method,
    mailbox: account.address,
    serverPath: account.server.path,
  };
}

/**
 * Where ops fix the account's sign-in: its password, or for xoauth2 the OAuth credential (the
 * app's client secret for client_credentials, the account's refresh token otherwise).
 */
export function credentialPath(account: Account): string {
  if (account.method !== 'xoauth2') return account.passwordPath;
  return account.oauth?.grant === 'client_credentials' ? `${account.server.path}.oauth` : account.oauthPath ?? `${account.server.path}.oauth`;
}

/**
 * Sends one message through the account's pool (or Graph): while the client waits (delivery:
 * passthrough), or for a queue entry's attempt. `route` is the alternate host, if used.
 */
export async function deliverNow(pools: TransportPools, account: Account, envelope: UpstreamEnvelope, message: Readable, route?: { host: string; port: number }, reopen?: () => Readable): Promise<SendOutcome> {
  const ctx = upstreamContext(account, route);
  if (account.server.type === 'graph') {
    // Graph is one HTTP call for all recipients
    try {
      const sent = await pools.graph(account, envelope, message, reopen);
      return { ok: true, accepted: sent.accepted, refused: [], upstreamReply: sent.upstreamReply };
    } catch (err) {
      return { ok: false, error: classifyUpstreamError(err, ctx) };
    }
  }
  // straight to the pool transport, without Mail.sendMail's compile steps (see TransportPools.send)
  return outcomeOf(pools.send(account, route, envelope, message), ctx);
}

/** deliverNow for a message held in memory, through the upstream worker thread (see UpstreamThread). */
export function deliverInThread(thread: UpstreamThread, account: Account, envelope: UpstreamEnvelope, bytes: Buffer, route?: { host: string; port: number }): Promise<SendOutcome> {
  return outcomeOf(thread.send(account, route, envelope, bytes), upstreamContext(account, route));
}

/** nodemailer's answer, or its failure, as per-recipient results or a classified failure. */
async function outcomeOf(sending: Promise<{ accepted?: unknown[]; rejectedErrors?: unknown[]; response?: string }>, ctx: UpstreamContext): Promise<SendOutcome> {
  try {
    const info = await sending;
    return { ok: true, accepted: (info.accepted ?? []).map(String), refused: refusals(info.rejectedErrors ?? [], ctx), upstreamReply: info.response ?? '' };
  } catch (err) {
    const e = err as { command?: string; rejectedErrors?: unknown[] };
    if (e?.command === 'RCPT TO' && Array.isArray(e.rejectedErrors) && e.rejectedErrors.length > 0) {
      // every recipient refused: still a per-recipient answer, not a failure of the upstream
      return { ok: true, accepted: [], refused: refusals(e.rejectedErrors, ctx), upstreamReply: '' };
    }
    return { ok: false, error: classifyUpstreamError(err, ctx) };
  }
}

function refusals(errors: unknown[], ctx: UpstreamContext): RecipientRefusal[] {
  return errors.map((e) => ({ recipient: (e as { recipient?: string }).recipient ?? '', error: classifyUpstreamError(e, ctx) }));
}
