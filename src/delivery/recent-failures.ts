import type { StoredError } from '../queue/entry.js';
import type { FailureStatus } from '../ops/status.js';

/**
 * The last failed or deferred attempts, newest first, for /status and the status page: what went
 * wrong lately and what ops can do about it (the classification's fix). In memory only: a restart
 * starts an empty list, and the log keeps the full story.
 */
export class RecentFailures {
  private readonly items: FailureStatus[] = [];

  constructor(private readonly keep = 10) {}

  record(entry: Omit<FailureStatus, keyof StoredErrorFields>, error: StoredError): void {
    const { kind, code, enhanced, reason, upstreamReply, fix, host, at } = error;
    this.items.unshift({
      ...entry,
      at,
      kind,
      code,
      enhanced,
      reason,
      ...(upstreamReply ? { upstreamReply } : {}),
      ...(fix ? { fix } : {}),
      ...(host ? { host } : {}),
    });
    if (this.items.length > this.keep) this.items.length = this.keep;
  }

  list(): FailureStatus[] {
    return [...this.items];
  }
}

type StoredErrorFields = Pick<FailureStatus, 'at' | 'kind' | 'code' | 'enhanced' | 'reason' | 'upstreamReply' | 'fix' | 'host'>;
