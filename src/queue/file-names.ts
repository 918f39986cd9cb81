import { join } from 'node:path';

/**
 * A journal segment's files: `NNNNNNNNNN.log` (records, journal-record.ts) and `NNNNNNNNNN.done`
 * beside it (ids of entries no longer there). Named here once for the journal (journal.ts), the
 * file worker that writes them (file-worker-thread.ts) and the delivered marks (file-done-marks.ts).
 */
export function segmentPath(dir: string, segment: number, kind: 'log' | 'done'): string {
  return join(dir, `${String(segment).padStart(10, '0')}.${kind}`);
}

export const SEGMENT_NAME = /^\d{10}\.(log|done)$/;
