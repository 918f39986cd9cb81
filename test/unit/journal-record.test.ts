import { describe, expect, it } from 'vitest';
import type { QueueEntryMeta } from '../../src/queue/entry.js';
import { encodeRecord, parseSegment, RECORD_HEADER_LENGTH } from '../../src/queue/journal-record.js';

function record(id: string, body: string): { meta: QueueEntryMeta; bytes: Buffer } {
  const message = Buffer.from(`Subject: ${id}\r\n\r\n${body}\r\n`, 'latin1');
  const meta = { format: 1, id, size: message.length } as unknown as QueueEntryMeta;
  // the message arrives in pieces, possibly views into larger buffers
  const pieces = [message.subarray(0, 5), Buffer.concat([Buffer.from('xx'), message.subarray(5)]).subarray(2)];
  return { meta, bytes: encodeRecord(Buffer.from(JSON.stringify(meta)), pieces, message.length) };
}

const ids = (segment: Buffer) => [...parseSegment(segment)].map((r) => r.meta.id);

describe('journal records', () => {
  const a = record('AAAAAAAAAAAA', 'first');
  const b = record('BBBBBBBBBBBB', 'second, with 8-bit bytes: \xe9\xff\x00');
  const c = record('CCCCCCCCCCCC', 'third');

  it('a segment of records reads back in order, each message at the place it gives', () => {
    const segment = Buffer.concat([a.bytes, b.bytes, c.bytes]);
    const records = [...parseSegment(segment)];
    expect(records.map((r) => r.meta)).toEqual([a.meta, b.meta, c.meta]);
    const second = records[1]!.location;
    expect(segment.toString('latin1', second.messageOffset, second.messageOffset + second.size)).toBe('Subject: BBBBBBBBBBBB\r\n\r\nsecond, with 8-bit bytes: \xe9\xff\x00\r\n');
    expect(a.bytes.subarray(0, RECORD_HEADER_LENGTH).toString('latin1')).toMatch(/^SQR1 \d{10} \d{10} [0-9a-f]{8}\n$/);
  });

  it('ends at a record cut short anywhere, or at a changed byte: only whole, unchanged records before it count', () => {
    const whole = Buffer.concat([a.bytes, b.bytes]);
    for (let cut = a.bytes.length; cut < whole.length; cut++) expect(ids(whole.subarray(0, cut))).toEqual(['AAAAAAAAAAAA']);
    for (const at of [a.bytes.length + 3, a.bytes.length + RECORD_HEADER_LENGTH + 2, whole.length - 1]) {
      const damaged = Buffer.from(whole);
      damaged[at] = damaged[at]! ^ 0x20;
      expect(ids(Buffer.concat([damaged, c.bytes]))).toEqual(['AAAAAAAAAAAA']);
    }
    expect(ids(Buffer.alloc(0))).toEqual([]);
    expect(ids(Buffer.alloc(4096))).toEqual([]);
  });
});
