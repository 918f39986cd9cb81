import type { LimitsConfig } from '../config/types.js';

/**
 * When a session has kept sendas waiting too long, decided on plain values (times in ms from any
 * monotonic clock). Three limits, as Postfix has them:
 * - idle: no byte from the client since sendas last spoke or last heard from it (smtpd_timeout);
 * - command: a command line begun and not ended — counted from its first byte and not restarted by
 *   later ones, so a line fed a byte at a time can't hold the session (smtpd_per_record_deadline);
 * - data: from the 354 to the final dot, however steadily the bytes come.
 * While sendas itself owes the client a reply (a handler or the upstream is working), none counts.
 */
export type TimeLimit = 'idle' | 'command' | 'data';

export interface SessionTiming {
  /** sendas owes the client a reply: nothing the client does or doesn't do is late. */
  readonly busy: boolean;
  /** The last byte from the client, or the last reply to it, whichever came later. */
  readonly lastActivity: number;
  /** The first byte of a command line not yet ended. */
  readonly lineSince: number | undefined;
  /** The 354, while the message is still arriving. */
  readonly dataSince: number | undefined;
}

export type DeadlineVerdict =
  | { readonly kind: 'busy' }
  | { readonly kind: 'wait'; readonly until: number }
  | { readonly kind: 'expired'; readonly limit: TimeLimit; readonly afterMs: number };

type Limits = Pick<LimitsConfig, 'idleTimeoutMs' | 'commandTimeoutMs' | 'dataTimeoutMs'>;

/** The earliest limit the session runs into, and whether it has run into it by `now`. */
export function checkDeadline(t: SessionTiming, limits: Limits, now: number): DeadlineVerdict {
  if (t.busy) return { kind: 'busy' };
  let limit: TimeLimit = 'idle';
  let due = t.lastActivity + limits.idleTimeoutMs;
  const consider = (name: TimeLimit, since: number | undefined, ms: number) => {
    if (since !== undefined && since + ms < due) {
      limit = name;
      due = since + ms;
    }
  };
  if (t.dataSince !== undefined) consider('data', t.dataSince, limits.dataTimeoutMs);
  else consider('command', t.lineSince, limits.commandTimeoutMs);
  if (now < due) return { kind: 'wait', until: due };
  const afterMs = limit === 'idle' ? limits.idleTimeoutMs : limit === 'data' ? limits.dataTimeoutMs : limits.commandTimeoutMs;
  return { kind: 'expired', limit, afterMs };
}
