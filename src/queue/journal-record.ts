import { crc32 } from 'node:zlib';
import type { QueueEntryMeta } from './entry.js';

/**
 * The record format of the queue journal (see store.ts): small entries accepted together are
 * appended to one segment file and made durable by one fdatasync, instead of a file, an fsync
 * and a rename each.
 *
 * A record is a 36-byte header, the entry's metadata as JSON, then the message:
 *
 *     "SQR1 " <JSON length, 10 digits> " " <message length, 10 digits> " " <CRC-32 of JSON and message, 8 hex> "\n"
 *
 * Segments are read from the start; the first record that is cut short or whose checksum does
 * not match ends the segment. Such a tail is a batch that was being written when the relay or
 * the machine stopped: none of its clients got a 250 (the reply waits for the fdatasync), and
 * a segment is never appended to again after a restart, so nothing valid can follow it.
 */
export const RECORD_HEADER_LENGTH = 36;
const HEADER_PATTERN = /^SQR1 (\d{10}) (\d{10}) ([0-9a-f]{8})\n$/;

/** Where a record's parts are, relative to the start of its segment. */
export interface RecordLocation {
  readonly jsonOffset: number;
  readonly jsonLength: number;
  /** The message's first byte; the message is `size` bytes long. */
  readonly messageOffset: number;
  readonly size: number;
}

/** One buffer holding the whole record, ready to append. */
export function encodeRecord(json: Buffer, message: readonly Buffer[], size: number): Buffer {
  const record = Buffer.allocUnsafeSlow(RECORD_HEADER_LENGTH + json.length + size);
  let at = RECORD_HEADER_LENGTH;
  at += json.copy(record, at);
  for (const chunk of message) at += chunk.copy(record, at);
  const sum = crc32(record.subarray(RECORD_HEADER_LENGTH)).toString(16).padStart(8, '0');
  record.write(`SQR1 ${pad10(json.length)} ${pad10(size)} ${sum}\n`, 0, 'latin1');
  return record;
}

/** The whole records of a segment, in order, each with its metadata; stops at the first damaged one. */
export function* parseSegment(segment: Buffer): Generator<{ meta: QueueEntryMeta; location: RecordLocation }> {
  let at = 0;
  while (at + RECORD_HEADER_LENGTH <= segment.length) {
    const match = HEADER_PATTERN.exec(segment.toString('latin1', at, at + RECORD_HEADER_LENGTH));
    if (!match) return;
    const jsonLength = Number(match[1]);
    const size = Number(match[2]);
    const jsonOffset = at + RECORD_HEADER_LENGTH;
    const end = jsonOffset + jsonLength + size;
    if (end > segment.length) return;
    if (crc32(segment.subarray(jsonOffset, end)) !== Number.parseInt(match[3]!, 16)) return;
    let meta: QueueEntryMeta;
    try {
      meta = JSON.parse(segment.toString('utf8', jsonOffset, jsonOffset + jsonLength)) as QueueEntryMeta;
    } catch {
      return;
    }
    if (meta.size !== size) return;
    yield { meta, location: { jsonOffset, jsonLength, messageOffset: jsonOffset + jsonLength, size } };
    at = end;
  }
}

function pad10(n: number): string {
  return String(n).padStart(10, '0');
}
