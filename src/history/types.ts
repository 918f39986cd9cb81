/**
 * The message trace: one event per recipient outcome (and one when a message is received or
 * refused at SMTP time). Logged as a line, kept in the delivery history, answered by
 * `sendas trace` and the status page's search. Plain values only: this is what crosses from the
 * stages that produce events to the history's writer and to its readers.
 */
export type TraceEventKind =
  /** accepted into the queue (one event per recipient) */
  | 'queued'
  /** the upstream took it for this recipient (queue or passthrough) */
  | 'delivered'
  /** a temporary failure: another attempt follows */
  | 'deferred'
  /** waiting for the account's budget; not an attempt */
  | 'quota'
  /** given up for this recipient: a permanent refusal or the queue's max_age */
  | 'failed'
  /** refused at SMTP time: the client got a 4xx/5xx, nothing was queued */
  | 'refused'
  /** removed by `sendas queue delete` */
  | 'deleted';

export interface TraceEvent {
  /** ISO 8601 time of the event */
  readonly at: string;
  readonly event: TraceEventKind;
  readonly queueId: string;
  /** the Message-ID header's value, without angle brackets; absent when the message had none */
  readonly messageId?: string;
  readonly envelopeFrom?: string;
  readonly recipient?: string;
  /** `channel:NAME`, `agent:NAME` or `(default account)` */
  readonly identity?: string;
  /** the upstream account's key (as on /status) */
  readonly account?: string;
  readonly server?: string;
  /** host:port the attempt went to */
  readonly host?: string;
  /** the upstream's reply, or sendas's own for a refusal */
  readonly reply?: string;
  readonly attempt?: number;
  /** the error classification (errors/ ErrorKind) for anything but success */
  readonly kind?: string;
  /** what ops should do about it (RelayError.fix), when known */
  readonly fix?: string;
}

/** The `identity` of a trace event (and of the log lines beside it): `channel:NAME`, `agent:NAME` or `(default account)`. */
export function identityLabel(identity: { readonly kind: string; readonly name: string } | null | undefined): string {
  return identity ? `${identity.kind}:${identity.name}` : '(default account)';
}

/** What a search for an address, a Message-ID or a queue id finds: events oldest first, at most `limit`. */
export type TraceLookup = (query: string, limit?: number) => Promise<readonly TraceEvent[]>;
