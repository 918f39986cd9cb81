import type { ErrorKind } from '../errors/relay-error.js';

/**
 * A queue entry's metadata, stored as JSON beside the message file. Everything needed to
 * deliver, retry, list and report on a message, without reading the message itself.
 */
export interface QueueEntryMeta {
  readonly format: 1;
  readonly id: string;
  /** ISO time the relay answered 250. */
  readonly receivedAt: string;
  readonly client: { readonly address: string; readonly login: string | undefined };
  readonly envelope: {
    /** The MAIL FROM the client gave; "" for the null sender. Failure notices go here. */
    readonly originalFrom: string;
    readonly eightBit: boolean;
  };
  /** The channel or agent decided at acceptance; null = the default server's own account. */
  readonly identity: { readonly kind: 'channel' | 'agent'; readonly name: string } | null;
  /** Server and account address at acceptance, for listings; delivery looks the account up again. */
  readonly serverName: string;
  readonly accountAddress: string;
  readonly fromBefore: string | undefined;
  readonly fromAfter: string;
  readonly subject: string | undefined;
  /** The Message-ID header's value without angle brackets (for the trace); absent in entries written before it was kept. */
  readonly messageId?: string;
  readonly size: number;
  /**
   * The DKIM-Signature header field (with its CRLF) made at acceptance, over the message as
   * stored; delivery puts it in front of the message at every attempt. Absent: sent unsigned.
   */
  readonly dkimSignature?: string;
  /** A failure notice written by sendas itself: never the subject of another notice. */
  readonly notice: boolean;
  recipients: RecipientState[];
  attempts: number;
  /** ISO time of the next attempt; absent while it is due now. */
  nextAttemptAt: string | undefined;
  lastError: StoredError | undefined;
  /** Set when the entry moved to the failed area. */
  failedAt?: string | undefined;
  /** Set by `sendas queue retry` on a failed entry: max_age counts from here. */
  requeuedAt?: string;
}

export interface RecipientState {
  readonly address: string;
  status: 'pending' | 'delivered' | 'failed';
  /** Attempts that included this recipient. */
  attempts: number;
  deliveredAt?: string;
  /** The upstream's reply for a delivered recipient. */
  upstreamReply?: string;
  lastError?: StoredError;
}

/** A classified failure as stored: the same classification as the SMTP reply and the log line. */
export interface StoredError {
  readonly kind: ErrorKind;
  readonly code: number;
  readonly enhanced: string;
  readonly reason: string;
  readonly upstreamReply?: string;
  /** What ops can change about it (the classification's fix), shown by `sendas queue` and in the notice. */
  readonly fix?: string;
  readonly at: string;
  /** The upstream host that answered (the alternate's, when used). */
  readonly host?: string;
}

export function pendingRecipients(meta: QueueEntryMeta): RecipientState[] {
  return meta.recipients.filter((r) => r.status === 'pending');
}
