/** Envelope as it goes upstream. */
export interface UpstreamEnvelope {
  /** "" for the null sender. */
  readonly from: string;
  readonly to: readonly string[];
  /** The client declared BODY=8BITMIME (or SMTPUTF8): ask the upstream for the same. */
  readonly eightBit: boolean;
}
