import { Readable } from 'node:stream';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { describe, expect, it } from 'vitest';
import { attachmentParts, draftMime, partsToDetach, survey } from '../../src/transport/graph-mime.js';
import { ChunkedUpload, UPLOAD_CHUNK_BYTES, chunkRanges, contentRange, type ChunkRange } from '../../src/transport/graph-upload.js';

const KIB = 1024;

describe('upload session chunks', () => {
  it('are 3.75 MiB: the largest multiple of 320 KiB under 4 MiB', () => {
    expect(UPLOAD_CHUNK_BYTES).toBe(3_932_160);
    expect(UPLOAD_CHUNK_BYTES % (320 * KIB)).toBe(0);
    expect(UPLOAD_CHUNK_BYTES).toBeLessThanOrEqual(4 * 1024 * KIB);
    expect(UPLOAD_CHUNK_BYTES + 320 * KIB).toBeGreaterThan(4 * 1024 * KIB);
  });

  it('cover the file in order, end inclusive, the last one shorter', () => {
    const total = 10 * 1024 * KIB;
    const ranges = chunkRanges(total);
    expect(ranges.map(contentRange)).toEqual(['bytes 0-3932159/10485760', 'bytes 3932160-7864319/10485760', 'bytes 7864320-10485759/10485760']);
    // exactly a multiple: no empty last chunk
    expect(chunkRanges(2 * UPLOAD_CHUNK_BYTES).map((r) => r.end - r.start + 1)).toEqual([UPLOAD_CHUNK_BYTES, UPLOAD_CHUNK_BYTES]);
    expect(chunkRanges(1)).toEqual([{ start: 0, end: 0, total: 1 }]);
    expect(() => chunkRanges(100, 1000 * KIB)).toThrow(/not a multiple of 320 KiB/);
  });

  it('ChunkedUpload sends pieces of any size as exact chunks, holding one at a time', async () => {
    const total = 3 * 320 * KIB + 12_345;
    const data = Buffer.alloc(total);
    for (let i = 0; i < total; i++) data[i] = (i * 7) % 251;
    const got: { range: ChunkRange; bytes: Buffer }[] = [];
    let inFlight = 0;
    const upload = new ChunkedUpload(
      total,
      async (chunk, range) => {
        inFlight++;
        expect(inFlight).toBe(1);
        got.push({ range, bytes: Buffer.from(chunk) });
        await new Promise((r) => setImmediate(r));
        inFlight--;
      },
      320 * KIB,
    );
    // odd piece sizes, as a base64 decoder hands them over
    for (let at = 0; at < total; ) {
      const n = Math.min(50_001, total - at);
      await upload.write(data.subarray(at, at + n));
      at += n;
    }
    await upload.end();
    expect(got.map((g) => g.range)).toEqual(chunkRanges(total, 320 * KIB));
    expect(Buffer.concat(got.map((g) => g.bytes)).equals(data)).toBe(true);
  });

  it('ChunkedUpload refuses an attachment whose size differs from the one measured', async () => {
    const short = new ChunkedUpload(10, async () => undefined, 320 * KIB);
    await short.write(Buffer.alloc(9));
    await expect(short.end()).rejects.toThrow(/has 9 bytes, not the 10/);
    const long = new ChunkedUpload(10, async () => undefined, 320 * KIB);
    await expect(long.write(Buffer.alloc(11))).rejects.toThrow(/more than the 10 bytes/);
  });
});

async function build(attachments: { filename: string; content: Buffer; cid?: string }[], html = '<p>Hello <img src="cid:logo"></p>'): Promise<Buffer> {
  const info = await nodemailer.createTransport({ streamTransport: true, buffer: true }).sendMail({
    from: 'support@contoso.example',
    to: 'customer@fabrikam.example',
    subject: 'Your documents',
    messageId: '<ticket-4711@contoso.example>',
    headers: { 'X-Ticket': '4711' },
    text: 'Hello',
    html,
    attachments,
  });
  return info.message as Buffer;
}
const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * seed) % 256));

describe('the MIME passes of the draft path', () => {
  it('survey measures each part decoded; the largest attachments leave the draft until it fits', async () => {
    const big = bytes(400_000, 13);
    const small = bytes(20_000, 7);
    const logo = bytes(3_000, 3);
    const raw = await build([
      { filename: 'small.bin', content: small },
      { filename: 'big.pdf', content: big },
      { filename: 'logo.png', content: logo, cid: 'logo' },
    ]);
    const s = await survey(Readable.from([raw]));
    expect(s.totalBytes).toBe(raw.length);
    const files = s.parts.filter((p) => !p.body);
    expect(files.map((p) => [p.name, p.decodedBytes]).sort()).toEqual([
      ['big.pdf', 400_000],
      ['logo.png', 3_000],
      ['small.bin', 20_000],
    ]);
    expect(files.find((p) => p.name === 'logo.png')).toMatchObject({ contentId: 'logo', inline: true });
    expect(s.parts.filter((p) => p.body).map((p) => p.contentType)).toEqual(['text/plain', 'text/html']);

    // a limit the message misses by less than big.pdf: only big.pdf goes
    expect(partsToDetach(s, raw.length - 100_000)?.map((p) => p.name)).toEqual(['big.pdf']);
    expect(partsToDetach(s, raw.length)).toEqual([]);
    // text alone over the limit: nothing helps
    expect(partsToDetach(s, 500)).toBeUndefined();
  });

  it('the draft keeps everything but the detached parts, as valid MIME; the detached parts come decoded', async () => {
    const big = bytes(400_000, 13);
    const small = bytes(20_000, 7);
    const raw = await build([
      { filename: 'big.pdf', content: big },
      { filename: 'small.bin', content: small },
    ]);
    const s = await survey(Readable.from([raw]));
    const detach = partsToDetach(s, raw.length - 100_000)!;
    const ids = new Set(detach.map((p) => p.index));
    const draft = (await draftMime(Readable.from([raw]), ids, raw.length))!;
    expect(draft.length).toBeLessThan(raw.length - 500_000);
    const parsed = await simpleParser(draft);
    expect(parsed.subject).toBe('Your documents');
    expect(parsed.messageId).toBe('<ticket-4711@contoso.example>');
    expect(parsed.headers.get('x-ticket')).toBe('4711');
    expect(parsed.text?.trim()).toBe('Hello');
    expect(parsed.attachments.map((a) => [a.filename, a.content.equals(small)])).toEqual([['small.bin', true]]);
    // the structure is still sound: one part fewer, not an empty one
    expect(parsed.html).toContain('Hello');
    expect(draft.toString('latin1').match(/^--/gm)).toHaveLength(raw.toString('latin1').match(/^--/gm)!.length - 1);

    const got = new Map<number, Buffer[]>();
    await attachmentParts(Readable.from([raw]), ids, async (index) => {
      got.set(index, []);
      return { write: async (piece) => void got.get(index)!.push(piece), end: async () => undefined };
    });
    expect([...got.values()].map((pieces) => Buffer.concat(pieces).equals(big))).toEqual([true]);
    // too large even so: undefined, the caller says why
    expect(await draftMime(Readable.from([raw]), ids, 1000)).toBeUndefined();
  });

  it('a slow upload gets every decoded byte: the message is read no faster than it is taken', async () => {
    const big = bytes(4 * 1024 * KIB, 29);
    const raw = await build([{ filename: 'big.bin', content: big }]);
    const s = await survey(Readable.from([raw]));
    const part = s.parts.find((p) => p.name === 'big.bin')!;
    expect(part.decodedBytes).toBe(big.length);
    const pieces: Buffer[] = [];
    await attachmentParts(Readable.from([raw]), new Set([part.index]), async () => ({
      write: async (piece) => {
        pieces.push(piece);
        await new Promise((r) => setTimeout(r, 1));
      },
      end: async () => undefined,
    }));
    expect(Buffer.concat(pieces).equals(big)).toBe(true);
  });
});
