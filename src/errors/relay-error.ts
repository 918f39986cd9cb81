/**
 * One classification of everything that can go wrong with a message. The same value feeds the
 * SMTP reply the client sees, the log line and (later) the metric label, so an operator reading
 * any of the three learns the same reason.
 */
export type ErrorKind =
  | 'config' // our own configuration can't serve this message (e.g. override without a password)
  | 'access' // the client is not allowed to relay (not logged in, outside `allow`)
  | 'client' // the client went away before the end of the message
  | 'policy' // sendas refuses the message by policy (unknown sender, From not allowed, send_as)
  | 'message' // the message itself can't be handled (too large, unparseable From)
  | 'auth' // the upstream refused our sign-in
  | 'tls' // TLS handshake or certificate problem with the upstream
  | 'network' // connection refused, timeout, DNS
  | 'throttled' // the upstream asks us to slow down (421, 4.7.x rate limits)
  | 'quota' // an account's sending quota is used up (sendas' own daily budget, or the provider's): the message waits
  | 'sender' // the upstream refused the envelope sender / From for this account
  | 'recipient' // the upstream refused a recipient
  | 'size' // the upstream says the message is too large
  | 'refused' // any other upstream 4xx/5xx
  | 'internal'; // a bug or an unexpected local failure

export interface SmtpStatus {
  /** Basic reply code, e.g. 550. */
  code: number;
  /** Enhanced status code (RFC 3463), e.g. "5.7.1". */
  enhanced: string;
}

export interface ErrorFields {
  readonly kind: ErrorKind;
  readonly code: number;
  readonly enhanced: string;
  readonly reason: string;
  readonly upstreamReply?: string;
  readonly fix?: string;
}

/**
 * What a failure means for the account that met it, beyond this message: `backoff` — the account
 * has too many sessions or is signing in too often, so it runs fewer at once for a while (no
 * failover: the host is fine); `hold` — a provider quota is used up, so the account sends nothing
 * until its window frees (the messages wait, they never fail for it).
 */
export type AccountReaction = 'backoff' | 'hold';

export class RelayError extends Error {
  readonly kind: ErrorKind;
  readonly status: SmtpStatus;
  /** What the upstream said, verbatim, when the error comes from an upstream reply. */
  readonly upstreamReply: string | undefined;
  /**
   * The host could not be used at all (no connection, no greeting, TLS, 421): the classification
   * says so, and failover acts on it without reading codes or text itself.
   */
  readonly unreachable: boolean;
  /** What ops can do about it, in the provider's terms (shown in log, queue list, notice, `sendas test`). */
  readonly fix: string | undefined;
  readonly account: AccountReaction | undefined;

  constructor(
    kind: ErrorKind,
    status: SmtpStatus,
    message: string,
    opts: { upstreamReply?: string; cause?: unknown; unreachable?: boolean; fix?: string; account?: AccountReaction } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RelayError';
    this.kind = kind;
    this.status = status;
    this.upstreamReply = opts.upstreamReply;
    this.unreachable = opts.unreachable ?? false;
    this.fix = opts.fix;
    this.account = opts.account;
  }

  get temporary(): boolean {
    return this.status.code >= 400 && this.status.code < 500;
  }

  /** The reply line text after the basic code: "5.7.1 sentence". */
  get replyText(): string {
    return `${this.status.enhanced} ${oneLine(this.message)}`;
  }

  /** An Error shaped the way smtp-server expects from a callback. */
  toSmtpServerError(): Error & { responseCode: number } {
    const err = new Error(this.replyText) as Error & { responseCode: number };
    err.responseCode = this.status.code;
    return err;
  }

  /** The fields a log line, a queue entry's recorded failure and a notice carry about it. */
  toLog(): ErrorFields {
    return {
      kind: this.kind,
      code: this.status.code,
      enhanced: this.status.enhanced,
      reason: this.message,
      ...(this.upstreamReply ? { upstreamReply: this.upstreamReply } : {}),
      ...(this.fix ? { fix: this.fix } : {}),
    };
  }
}

/**
 * The reply for a failure sendas did not foresee: temporary, so the client keeps the message and
 * tries again, with the id that finds the log line about it.
 */
export function internalError(id: string, cause?: unknown): RelayError {
  return new RelayError('internal', { code: 451, enhanced: '4.3.0' }, `Internal error in the relay; the message was not sent (id ${id})`, cause === undefined ? {} : { cause });
}

/**
 * The temporary form of an error: the same kind, reason and detail code, as 451 4.x.x. For
 * failures ops can fix while the message waits (an identity removed from the config), which would
 * otherwise fail it for good.
 */
export function deferredForm(err: RelayError): RelayError {
  if (err.status.code === 451 && err.status.enhanced.startsWith('4')) return err;
  return new RelayError(err.kind, { code: 451, enhanced: `4${err.status.enhanced.slice(1)}` }, err.message, {
    upstreamReply: err.upstreamReply,
    cause: err,
    unreachable: err.unreachable,
    ...(err.fix ? { fix: err.fix } : {}),
    ...(err.account ? { account: err.account } : {}),
  });
}

export function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/\s{2,}/g, ' ').trim();
}

export function isRelayError(err: unknown): err is RelayError {
  return err instanceof RelayError;
}
