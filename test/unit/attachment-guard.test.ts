import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { AttachmentGuard, readableSize } from '../../src/reception/attachment-guard.js';
import type { RelayError } from '../../src/errors/relay-error.js';

const KB = 1024;

function mime(parts: { name?: string; type: string; bytes: number; encoding?: 'base64' | '8bit'; disposition?: string }[]): Buffer {
  const body = parts
    .map((p) => {
      const headers = [`Content-Type: ${p.type}${p.name ? `; name="${p.name}"` : ''}`, `Content-Transfer-Encoding: ${p.encoding ?? 'base64'}`];
      if (p.disposition ?? p.name) headers.push(`Content-Disposition: ${p.disposition ?? 'attachment'}${p.name ? `; filename="${p.name}"` : ''}`);
      const content = p.encoding === '8bit' ? `${'t'.repeat(76)}\r\n`.repeat(Math.ceil(p.bytes / 78)) : (Buffer.alloc(p.bytes, 7).toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
      return `--b\r\n${headers.join('\r\n')}\r\n\r\n${content}\r\n`;
    })
    .join('');
  return Buffer.from(`From: support@acme.example\r\nSubject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n${body}--b--\r\n`);
}

/** The message through the guard in 16 KiB chunks: the bytes passed on, or the error. */
async function run(limit: number, message: Buffer): Promise<{ passed: number; err?: RelayError }> {
  const guard = new AttachmentGuard(limit);
  let passed = 0;
  guard.on('data', (c: Buffer) => (passed += c.length));
  const chunks: Buffer[] = [];
  for (let i = 0; i < message.length; i += 16 * KB) chunks.push(message.subarray(i, i + 16 * KB));
  try {
    await new Promise<void>((resolve, reject) => {
      guard.once('error', reject);
      guard.once('end', resolve);
      Readable.from(chunks).pipe(guard);
    });
    return { passed };
  } catch (err) {
    return { passed, err: err as RelayError };
  }
}

describe('AttachmentGuard (listen.max_attachment_size)', () => {
  it('passes a message whose attachments are all within the limit, byte for byte', async () => {
    const message = mime([
      { type: 'text/plain', bytes: 300 * KB, encoding: '8bit' },
      { name: 'small.pdf', type: 'application/pdf', bytes: 90 * KB },
      { name: 'exact.bin', type: 'application/octet-stream', bytes: 100 * KB },
    ]);
    expect(await run(100 * KB, message)).toEqual({ passed: message.length });
  });

  it('refuses a larger attachment with 552 5.3.4, naming it and its decoded size, and stops passing the message on', async () => {
    const message = mime([
      { name: 'ok.txt', type: 'text/plain', bytes: 10 * KB },
      { name: 'report.pdf', type: 'application/pdf', bytes: 250 * KB },
      { name: 'after.png', type: 'image/png', bytes: 10 * KB },
    ]);
    const { passed, err } = await run(100 * KB, message);
    expect(err?.status).toEqual({ code: 552, enhanced: '5.3.4' });
    expect(err?.message).toBe('Attachment "report.pdf" is 250 KB; this relay accepts attachments up to 100 KB');
    // what was passed on ends near the point where the part went over
    expect(passed).toBeLessThan(10 * KB * 1.4 + 100 * KB * 1.4 + 16 * KB + 2 * KB);
  });

  it('counts a part without a file name that is not text, and the last part of the message', async () => {
    const { err } = await run(64 * KB, mime([{ type: 'image/jpeg', bytes: 1.5 * 1024 * KB, disposition: 'inline' }]));
    expect(err?.message).toBe('Attachment (a image/jpeg part without a file name) is 1.5 MB; this relay accepts attachments up to 64 KB');
  });

  it('does not count the message text itself', async () => {
    const message = mime([{ type: 'text/html', bytes: 200 * KB, encoding: '8bit' }]);
    expect(await run(64 * KB, message)).toEqual({ passed: message.length });
  });

  it('writes sizes as relay.yaml does, in binary units', () => {
    expect([readableSize(512), readableSize(10 * KB), readableSize(12.34 * 1024 * KB), readableSize(10 * 1024 * KB)]).toEqual(['512 bytes', '10 KB', '12.3 MB', '10 MB']);
  });
});
