import { Transform, type TransformCallback } from 'node:stream';
import { Splitter, type MimeNode, type SplitterChunk } from '@zone-eu/mailsplit';
import { RelayError } from '../errors/relay-error.js';

const LF = 0x0a;

interface Part {
  readonly label: string;
  readonly base64: boolean;
  /** Bytes of the part's body as sent. */
  sent: number;
  /** Line breaks in it (CRLF: the line-end guard ran before). */
  lines: number;
  /** base64: the "=" padding at the end so far. */
  padding: number;
}

/**
 * `listen.max_attachment_size`: the message's MIME parts are followed as the body streams
 * (mailsplit's Splitter beside the stream, which passes on unchanged), and a part over the limit
 * fails the message with 552 5.3.4 naming it — the file size the Sinch Contact Pro console
 * limits. A base64 part is measured by its decoded size (¾ of its text without the line breaks);
 * any other by its size as sent, which is never smaller than its content.
 *
 * Once a part is over the limit nothing more is passed on (the queue entry being written stops
 * growing and is discarded when the error arrives), but the part is still measured to its end,
 * so the reply can say how large it is. Only runs when the limit is set: parsing every part
 * costs CPU that the usual message does not need.
 */
export class AttachmentGuard extends Transform {
  private readonly splitter = new Splitter({ ignoreEmbedded: true });
  private part: Part | undefined;
  private over: Part | undefined;
  private failure: RelayError | undefined;
  private readonly ended: Promise<void>;

  constructor(private readonly limit: number) {
    super();
    this.splitter.on('data', (chunk: SplitterChunk) => this.onChunk(chunk));
    // the declared type knows only the 'data' event
    const splitter = this.splitter as unknown as Transform;
    this.ended = new Promise((resolve) => {
      splitter.once('end', resolve);
      splitter.once('error', (err: Error) => {
        this.failure ??= new RelayError('message', { code: 550, enhanced: '5.6.0' }, `The MIME structure of the message can't be read to check its attachments' sizes (${err.message})`);
        resolve();
      });
    });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.splitter.write(chunk, () => {
      if (this.failure) return done(this.failure);
      // over the limit: measured, not passed on
      if (this.over) return done();
      done(null, chunk);
    });
  }

  override _flush(done: TransformCallback): void {
    this.splitter.end();
    void this.ended.then(() => {
      this.closePart();
      done(this.failure);
    });
  }

  private onChunk(chunk: SplitterChunk): void {
    if (chunk.type === 'node') {
      this.closePart();
      this.part = isAttachment(chunk) ? { label: labelOf(chunk), base64: chunk.encoding === 'base64', sent: 0, lines: 0, padding: 0 } : undefined;
      return;
    }
    const part = this.part;
    if (chunk.type !== 'body' || !part) return;
    part.sent += chunk.value.length;
    if (part.base64) {
      part.lines += countLf(chunk.value);
      part.padding = trailingPadding(chunk.value);
    }
    if (!this.over && decodedSize(part) > this.limit) this.over = part;
  }

  /** The part being read is over: if it was the one over the limit, the message fails now. */
  private closePart(): void {
    if (this.over && this.over === this.part && !this.failure) {
      this.failure = new RelayError(
        'message',
        { code: 552, enhanced: '5.3.4' },
        `Attachment ${this.over.label} is ${readableSize(decodedSize(this.over))}; this relay accepts attachments up to ${readableSize(this.limit)}`,
      );
    }
    this.part = undefined;
  }
}

/** Every leaf part but the message's text: a file name, `attachment`, or content that isn't text. */
function isAttachment(node: MimeNode): boolean {
  if (node.multipart) return false;
  if (node.filename || node.disposition === 'attachment') return true;
  const type = node.contentType || 'text/plain';
  return !type.startsWith('text/');
}

function labelOf(node: MimeNode): string {
  if (node.filename) return JSON.stringify(node.filename);
  return `(a ${node.contentType || 'text/plain'} part without a file name)`;
}

function decodedSize(part: Part): number {
  return part.base64 ? Math.floor(((part.sent - 2 * part.lines) * 3) / 4) - part.padding : part.sent;
}

/** The "=" at the end of a base64 chunk, line breaks after them aside. */
function trailingPadding(buf: Buffer): number {
  let i = buf.length - 1;
  while (i >= 0 && (buf[i] === LF || buf[i] === 0x0d)) i--;
  let n = 0;
  while (i >= 0 && buf[i] === 0x3d && n < 2) (i--, n++);
  return n;
}

function countLf(buf: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(LF); i >= 0; i = buf.indexOf(LF, i + 1)) n++;
  return n;
}

/** "12.3 MB", "640 KB", "512 bytes": binary units, as relay.yaml's sizes are. */
export function readableSize(bytes: number): string {
  const one = (n: number) => (Math.round(n * 10) / 10).toString();
  if (bytes >= 1024 ** 3) return `${one(bytes / 1024 ** 3)} GB`;
  if (bytes >= 1024 ** 2) return `${one(bytes / 1024 ** 2)} MB`;
  if (bytes >= 1024) return `${one(bytes / 1024)} KB`;
  return `${bytes} bytes`;
}
