import { once } from 'node:events';
import type { Readable, Transform } from 'node:stream';
import { Splitter, type MimeNode } from '@zone-eu/mailsplit';

/**
 * The MIME side of Graph's draft path, on mailsplit: a message too large for one sendMail
 * request is read three times from its file (never held whole): survey() measures each part,
 * draftMime() writes the message without the parts that go separately, attachmentParts() hands
 * those parts over decoded, a chunk at a time.
 *
 * Parts are numbered by the order of their header sections (mailsplit's 'node' objects), which
 * is the same on every read of the same bytes. Embedded messages (message/rfc822) count as one
 * part: they go as a file attachment like any other.
 */

/** A leaf part of the message as survey() found it. */
export interface MimePart {
  /** Its number in the order of the message's parts (see above). */
  readonly index: number;
  /** Header section and encoded body as they are in the message. */
  readonly rawBytes: number;
  /** The body after its transfer encoding is undone: what Graph's attachment size means. */
  readonly decodedBytes: number;
  readonly contentType: string;
  readonly name: string | undefined;
  readonly contentId: string | undefined;
  readonly inline: boolean;
  /** A text body (text/plain, text/html, not marked as an attachment): it stays in the draft. */
  readonly body: boolean;
}

export interface MimeSurvey {
  readonly totalBytes: number;
  readonly parts: readonly MimePart[];
}

/** Every node object of a message, in order, with backpressure (each is handled before the next is read). */
function split(message: Readable): AsyncIterable<{ type: 'node'; node: MimeNode } | { type: 'data' | 'body'; value: Buffer }> {
  const splitter = new Splitter({ ignoreEmbedded: true });
  message.on('error', (err) => splitter.destroy(err));
  message.pipe(splitter);
  return (async function* () {
    try {
      for await (const obj of splitter as AsyncIterable<{ type: string; value?: Buffer }>) {
        if (obj.type === 'node') yield { type: 'node', node: obj as unknown as MimeNode };
        else yield { type: obj.type as 'data' | 'body', value: obj.value! };
      }
    } finally {
      // a pass that stops early (a failed upload) must not leave the file open
      message.destroy();
    }
  })();
}

/**
 * A part's body through mailsplit's decoder for its transfer encoding, each decoded piece handed
 * to `sink` as the decoder gives it (awaited: a slow sink slows the writer down).
 */
function decoding(node: MimeNode, sink: (piece: Buffer) => Promise<void> | void): { write(encoded: Buffer): Promise<void>; end(): Promise<void> } {
  const decoder: Transform = node.getDecoder();
  const consumed = (async () => {
    for await (const piece of decoder) await sink(piece as Buffer);
  })();
  // a failed sink ends the loop above (and destroys the decoder): the writer must hear of it
  consumed.catch(() => undefined);
  return {
    async write(encoded) {
      if (decoder.write(encoded)) return;
      const drained = once(decoder, 'drain');
      drained.catch(() => undefined);
      await Promise.race([drained, consumed]);
    },
    async end() {
      decoder.end();
      await consumed;
    },
  };
}

function isLeaf(node: MimeNode): boolean {
  return !node.multipart;
}

function describe(node: MimeNode, index: number): Omit<MimePart, 'rawBytes' | 'decodedBytes'> {
  const contentType = node.contentType || 'text/plain';
  const headers = node.headers;
  const cid = headers ? headers.getFirst('content-id').trim().replace(/^<|>$/g, '') : '';
  const attachment = node.disposition === 'attachment' || Boolean(node.filename);
  return {
    index,
    contentType,
    name: node.filename || undefined,
    contentId: cid || undefined,
    inline: node.disposition === 'inline' || (!attachment && Boolean(cid)),
    body: !attachment && (contentType === 'text/plain' || contentType === 'text/html'),
  };
}

/** Pass one: each leaf part's size, encoded and decoded, and what it is. */
export async function survey(message: Readable): Promise<MimeSurvey> {
  const parts: MimePart[] = [];
  let totalBytes = 0;
  let index = -1;
  let current: { info: Omit<MimePart, 'rawBytes' | 'decodedBytes'>; raw: number; decoded: number; body: ReturnType<typeof decoding> } | undefined;
  const close = async () => {
    if (!current) return;
    const part = current;
    current = undefined;
    await part.body.end();
    parts.push({ ...part.info, rawBytes: part.raw, decodedBytes: part.decoded });
  };
  for await (const obj of split(message)) {
    if (obj.type === 'node') {
      await close();
      index++;
      const header = obj.node.getHeaders().length;
      totalBytes += header;
      if (isLeaf(obj.node)) {
        const part: NonNullable<typeof current> = { info: describe(obj.node, index), raw: header, decoded: 0, body: decoding(obj.node, (piece) => void (part.decoded += piece.length)) };
        current = part;
      }
      continue;
    }
    totalBytes += obj.value.length;
    if (obj.type === 'body' && current) {
      current.raw += obj.value.length;
      await current.body.write(obj.value);
    } else {
      await close();
    }
  }
  await close();
  return { totalBytes, parts };
}

/**
 * Which parts leave the draft so that it fits in `limit` bytes: the largest attachments first,
 * as few as possible (what stays keeps its exact MIME). Text bodies always stay; undefined when
 * the message does not fit even without every attachment.
 */
export function partsToDetach(s: MimeSurvey, limit: number): MimePart[] | undefined {
  let size = s.totalBytes;
  const detached: MimePart[] = [];
  const candidates = s.parts.filter((p) => !p.body && p.index > 0).sort((a, b) => b.rawBytes - a.rawBytes);
  for (const p of candidates) {
    if (size <= limit) break;
    detached.push(p);
    size -= p.rawBytes;
  }
  return size <= limit ? detached.sort((a, b) => a.index - b.index) : undefined;
}

/**
 * Pass two: the message without the detached parts, as MIME. A detached part goes with the
 * delimiter line before it (mailsplit hands that over as the 'data' just before the part's
 * header), so what stays is a well-formed multipart with one part fewer.
 */
export async function draftMime(message: Readable, detached: ReadonlySet<number>, limit: number): Promise<Buffer | undefined> {
  const out: Buffer[] = [];
  let size = 0;
  let pending: Buffer[] = [];
  let index = -1;
  let skipping = false;
  const emit = (b: Buffer) => {
    size += b.length;
    out.push(b);
  };
  for await (const obj of split(message)) {
    if (obj.type === 'node') {
      index++;
      skipping = detached.has(index);
      if (skipping) {
        const before = Buffer.concat(pending).toString('latin1');
        // drop the delimiter line ("\r\n--boundary\r\n") that opens the part
        pending = [Buffer.from(before.replace(/(?:\r?\n)?--[^\r\n]*\r?\n$/, ''), 'latin1')];
        continue;
      }
      for (const p of pending) emit(p);
      pending = [];
      emit(obj.node.getHeaders());
    } else if (obj.type === 'body') {
      if (!skipping) emit(obj.value);
    } else {
      skipping = false;
      pending.push(obj.value);
    }
    if (size > limit) {
      message.destroy();
      return undefined;
    }
  }
  for (const p of pending) emit(p);
  return size > limit ? undefined : Buffer.concat(out);
}

/**
 * Pass three: the detached parts' decoded bytes. For each detached part, in order, `onPart` is
 * called once and its `write` with each decoded piece (awaited: the message is read no faster
 * than the upload takes it), then `end`.
 */
export async function attachmentParts(
  message: Readable,
  detached: ReadonlySet<number>,
  onPart: (index: number) => Promise<{ write(piece: Buffer): Promise<void>; end(): Promise<void> }>,
): Promise<void> {
  let index = -1;
  let current: { sink: { write(piece: Buffer): Promise<void>; end(): Promise<void> }; body: ReturnType<typeof decoding> } | undefined;
  const close = async () => {
    if (!current) return;
    const { sink, body } = current;
    current = undefined;
    await body.end();
    await sink.end();
  };
  for await (const obj of split(message)) {
    if (obj.type === 'node') {
      await close();
      index++;
      if (detached.has(index)) {
        const sink = await onPart(index);
        current = { sink, body: decoding(obj.node, (piece) => sink.write(piece)) };
      }
    } else if (obj.type === 'body') {
      if (current) await current.body.write(obj.value);
    } else {
      await close();
    }
  }
  await close();
}
