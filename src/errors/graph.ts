import { RelayError } from './relay-error.js';

/**
 * Microsoft Graph's answers (sendMail, and the draft path's steps), classified here like SMTP replies are in the rule table:
 * Graph speaks HTTP, so its rows are status codes. `where` names the mailbox and the server.
 */
export function graphFailure(status: number, reply: string, where: string, mailbox: string, draftPath = false): RelayError {
  const opts = { upstreamReply: reply };
  if (status === 403 && draftPath) {
    // drafts and upload sessions are written into the mailbox: Mail.Send alone does not cover them
    return new RelayError('sender', { code: 550, enhanced: '5.7.1' }, `${where} refused: ${reply}; a large message goes as a draft, which needs the app's Mail.ReadWrite permission besides Mail.Send, for ${mailbox}`, opts);
  }
  if (status === 401) return new RelayError('auth', { code: 451, enhanced: '4.7.0' }, `${where} refused the app token: ${reply}; check the app's Mail.Send permission and admin consent`, opts);
  if (status === 403) return new RelayError('sender', { code: 550, enhanced: '5.7.1' }, `${where} refused: ${reply}; the app may not send as ${mailbox} (application access policy?)`, opts);
  if (status === 413) return new RelayError('size', { code: 552, enhanced: '5.3.4' }, `${where} refused the message as too large: ${reply}`, opts);
  // Exchange's message size limit (35 MB unless the admin raised it: Set-Mailbox -MaxSendSize)
  if (/\bErrorMessageSizeExceeded\b/.test(reply)) {
    return new RelayError('size', { code: 552, enhanced: '5.3.4' }, `${where} refused the message as larger than the mailbox may send: ${reply}; see the mailbox's MaxSendSize (Exchange's default is 35 MB)`, opts);
  }
  // a draft or upload session that vanished between two steps: the next attempt starts afresh
  if (status === 404) return new RelayError('refused', { code: 451, enhanced: '4.3.0' }, `${where} failed: ${reply}`, opts);
  if (status >= 500) return new RelayError('refused', { code: 451, enhanced: '4.3.0' }, `${where} failed: ${reply}`, opts);
  return new RelayError('refused', { code: 554, enhanced: '5.6.0' }, `${where} refused the message: ${reply}`, opts);
}

/** Graph asked to slow down (429/503) for longer than sendas waits in one attempt. */
export function graphThrottled(waitMs: number, reply: string, where: string): RelayError {
  return new RelayError('throttled', { code: 451, enhanced: '4.7.0' }, `${where} is throttling (retry after ${Math.round(waitMs / 1000)} s): ${reply}`, { upstreamReply: reply });
}

/** The HTTP request did not get an answer (DNS, connect, TLS, timeout). */
export function graphUnreachable(err: unknown, where: string): RelayError {
  const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
  return new RelayError('network', { code: 451, enhanced: '4.4.1' }, `Cannot reach ${where} (${cause})`, { cause: err, unreachable: true });
}

/** A message Graph cannot take in any form (see transport/graph.ts): `why` says what is too large. */
export function graphTooLarge(where: string, why: string): RelayError {
  return new RelayError('size', { code: 552, enhanced: '5.3.4' }, `${where} cannot take the message: ${why}`);
}
