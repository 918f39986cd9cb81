import { Transform, type TransformCallback } from 'node:stream';
import { Headers } from '@zone-eu/mailsplit';

/**
 * Splits a message into its header section and body, hands the parsed header section to
 * `onHeaders` (which may edit it, or throw to refuse the message), then emits the rebuilt
 * header section followed by the body bytes exactly as they came.
 *
 * A bare LF ends a header line here (mailsplit's Headers splits on it too), so the relay puts
 * reception's line-end guard (line-ends.ts) in front: by then every line ends in CRLF, and a bare
 * LF inside a field was made a space rather than a line of its own.
 *
 * Only the header section is held in memory (at most `maxHeaderBytes`); the body streams
 * through chunk by chunk. mailsplit's Splitter would parse every MIME part of the body too, which
 * costs CPU on large attachments and is not needed: only the top-level header changes.
 */
export class HeaderRewriteStream extends Transform {
  private head: Buffer[] = [];
  private headBytes = 0;
  private inBody = false;
  private readonly maxHeaderBytes: number;
  private readonly onHeaders: (headers: Headers) => void;

  constructor(opts: { maxHeaderBytes: number; onHeaders: (headers: Headers) => void }) {
    super();
    this.maxHeaderBytes = opts.maxHeaderBytes;
    this.onHeaders = opts.onHeaders;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.inBody) {
      done(null, chunk);
      return;
    }
    // search from a few bytes before the new chunk, so a blank line split across chunks is found
    const searchFrom = Math.max(0, this.headBytes - 3);
    this.head.push(chunk);
    this.headBytes += chunk.length;
    const buffered = this.head.length === 1 ? chunk : Buffer.concat(this.head);
    this.head = [buffered];
    const end = findHeaderEnd(buffered, searchFrom);
    if (end < 0) {
      if (this.headBytes > this.maxHeaderBytes) {
        done(new HeaderTooLargeError(this.maxHeaderBytes));
        return;
      }
      done();
      return;
    }
    this.inBody = true;
    this.head = [];
    try {
      this.push(this.rebuild(buffered.subarray(0, end)));
    } catch (err) {
      done(err as Error);
      return;
    }
    done(null, buffered.subarray(end));
  }

  override _flush(done: TransformCallback): void {
    if (this.inBody) {
      done();
      return;
    }
    // a message that is all header and no blank line: legal, and the header still gets rewritten
    const buffered = Buffer.concat(this.head);
    this.head = [];
    try {
      done(null, this.rebuild(buffered));
    } catch (err) {
      done(err as Error);
    }
  }

  private rebuild(head: Buffer): Buffer {
    const headers = new Headers(head);
    this.onHeaders(headers);
    return headers.build();
  }
}

export class HeaderTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`header section is larger than ${limit} bytes`);
  }
}

/** Offset just past the blank line that ends the header section (CRLF CRLF or bare LF LF); -1 if not seen yet. */
export function findHeaderEnd(buf: Buffer, from = 0): number {
  // a message that starts with a blank line has an empty header section
  if (from === 0) {
    if (buf[0] === 0x0a) return 1;
    if (buf[0] === 0x0d && buf[1] === 0x0a) return 2;
  }
  for (let i = buf.indexOf(0x0a, from); i >= 0; i = buf.indexOf(0x0a, i + 1)) {
    const next = buf[i + 1];
    if (next === 0x0a) return i + 2;
    if (next === 0x0d && buf[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}
