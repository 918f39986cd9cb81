import type SMTPPool from 'nodemailer/lib/smtp-pool';
import type { UpstreamErrorLike } from '../errors/classify.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';

/** Where the worker reads a queued message: the bytes themselves, or its queue file. */
export type MessageSource = { readonly bytes: Uint8Array } | { readonly path: string; readonly size: number };

/** What the upstream accepted, as deliverNow reads it from nodemailer. */
export interface SentInfo {
  readonly accepted: string[];
  readonly rejectedErrors: PlainUpstreamError[];
  readonly response: string;
}

/**
 * The upstream thread (upstream-worker.ts) and its client (upstream-thread.ts). A failed send is
 * rejected with its PlainUpstreamError's fields on the Error. The status sent with every batch
 * of replies is the open upstream connections across the worker's pools, for the metric.
 */
export type UpstreamProtocol = {
  send: {
    request: {
      readonly key: string;
      readonly fingerprint: string;
      /** Sent with the first message of a pool (key, fingerprint) the worker has not been given. */
      readonly options?: SMTPPool.Options;
      readonly envelope: UpstreamEnvelope;
      readonly message: MessageSource;
    };
    reply: SentInfo;
  };
  /** After a reload: the pools wanted (key → fingerprint); the others are closed. */
  retain: { request: { readonly wanted: Readonly<Record<string, string>> }; reply: void };
  /** After a failover: these pools get no more messages and close once idle (PoolSet.retire). */
  retire: { request: { readonly keys: readonly string[] }; reply: void };
  /** `cluster:`: these pools close now; the reply comes once their connections are closed down to the sockets. */
  close: { request: { readonly keys: readonly string[] }; reply: void };
};

/** A nodemailer error as plain data: what classifyUpstreamError reads, and the per-recipient ones. */
export interface PlainUpstreamError extends UpstreamErrorLike {
  readonly message: string;
  readonly rejectedErrors?: PlainUpstreamError[];
}

const FIELDS = ['code', 'originalCode', 'command', 'response', 'responseCode', 'recipient', 'timeoutType'] as const;

/** Copies what the classification needs: structured cloning would keep only an Error's message and stack. */
export function plainUpstreamError(raw: unknown): PlainUpstreamError {
  if (!raw || typeof raw !== 'object') return { message: String(raw) };
  const err = raw as Record<string, unknown>;
  const plain: Record<string, unknown> = { message: typeof err.message === 'string' ? err.message : String(raw) };
  for (const field of FIELDS) if (err[field] !== undefined) plain[field] = err[field];
  if (Array.isArray(err.rejectedErrors)) plain.rejectedErrors = err.rejectedErrors.map(plainUpstreamError);
  return plain as unknown as PlainUpstreamError;
}
