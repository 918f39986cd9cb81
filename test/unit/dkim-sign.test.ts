import { generateKeyPairSync } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { dkimTxtRecord } from '../../src/config/dkim.js';
import type { DkimKeyConfig } from '../../src/config/types.js';
import { DkimSignStream, dkimSignatureOf, withSignature } from '../../src/mail/dkim-sign.js';
import { snapshotOf, BASE_YAML } from './helpers.js';
import { verifyDkim } from '../support/dkim-verify.js';

const pem = (type: 'rsa' | 'ed25519') =>
  (type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519')).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

function keyOf(type: 'rsa' | 'ed25519', domain = 'acme.example'): DkimKeyConfig {
  const s = snapshotOf(BASE_YAML, `\ndkim:\n  - domain: ${domain}\n    selector: s1\n    key: ${JSON.stringify(pem(type))}\n`);
  return s.dkim.get(domain)!;
}
const records = (k: DkimKeyConfig) => ({ [`${k.selector}._domainkey.${k.domain}`]: dkimTxtRecord(k) });

const MESSAGE = Buffer.from(
  [
    'From: Acme Support <support@acme.example>',
    'To: customer@example.net',
    'Subject: =?UTF-8?Q?R=C3=BCckruf?=',
    'Date: Tue, 01 Dec 2026 12:00:00 +0000',
    'Message-ID: <1@acme.example>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    'Grüße aus der Straße   ',
    'with trailing spaces\t ',
    '',
    '',
  ].join('\r\n'),
  'utf8',
);

async function signStreamed(key: DkimKeyConfig, message: Buffer, chunk = 7): Promise<Buffer> {
  const tap = new DkimSignStream(key);
  const out: Buffer[] = [];
  const pieces = Array.from({ length: Math.ceil(message.length / chunk) }, (_, i) => message.subarray(i * chunk, (i + 1) * chunk));
  await pipeline(Readable.from(pieces), tap, new Writable({ write: (c: Buffer, _e, cb) => (out.push(c), cb()) }));
  expect(Buffer.concat(out).equals(message)).toBe(true);
  return Buffer.concat([Buffer.from(tap.signature!, 'latin1'), message]);
}

describe('DKIM signatures python3-dkim verifies', () => {
  for (const type of ['rsa', 'ed25519'] as const) {
    it(`${type}: an 8-bit message signed while it streams past in small chunks verifies; a changed body or a second From does not`, async () => {
      const key = keyOf(type);
      const signed = await signStreamed(key, MESSAGE);
      const verdict = await verifyDkim(signed, records(key));
      expect(verdict).toMatchObject({ ok: true, signatures: 1, d: 'acme.example', s: 's1', a: key.algorithm, c: 'relaxed/relaxed' });
      // From is signed once more than it occurs (oversigned)
      expect(verdict.h!.toLowerCase().split(/\s*:\s*/).filter((h) => h === 'from')).toHaveLength(2);

      const changed = Buffer.from(signed.toString('latin1').replace('with trailing', 'with Trailing'), 'latin1');
      expect((await verifyDkim(changed, records(key))).ok).toBe(false);
      const secondFrom = Buffer.from(signed.toString('latin1').replace('To: customer', 'From: ceo@acme.example\r\nTo: customer'), 'latin1');
      expect((await verifyDkim(secondFrom, records(key))).ok).toBe(false);
    });
  }

  it('the whole-message form (small passthrough messages) gives a signature that verifies', async () => {
    const key = keyOf('rsa');
    const sig = await dkimSignatureOf(key, MESSAGE);
    expect((await verifyDkim(Buffer.concat([Buffer.from(sig), MESSAGE]), records(key))).ok).toBe(true);
  });

  it('withSignature puts the field in front of the stream', async () => {
    const key = keyOf('ed25519');
    const sig = await dkimSignatureOf(key, MESSAGE);
    const chunks: Buffer[] = [];
    for await (const c of withSignature(sig, Readable.from([MESSAGE]))) chunks.push(c as Buffer);
    expect((await verifyDkim(Buffer.concat(chunks), records(key))).ok).toBe(true);
  });
});

/**
 * Memory flat in message size: a 10 MB body pushed through the signing tap by a source that
 * fails as soon as more than 1 MiB it produced has not reached the sink, i.e. is held somewhere
 * in between. mailauth's own DkimSignStream (which keeps the message until it has signed it) is
 * the control: the same source fails through it.
 */
describe('the signing tap holds the header section only', () => {
  const LIMIT = 1024 * 1024;
  const TOTAL = 10 * 1024 * 1024;
  const line = Buffer.from(`${Buffer.alloc(57, 0x25).toString('base64')}\r\n`);
  const block = Buffer.concat(Array(840).fill(line));

  async function pushThrough(tap: NodeJS.ReadWriteStream): Promise<void> {
    let produced = 0;
    let consumed = 0;
    const source = new Readable({
      read() {
        if (produced - consumed > LIMIT) {
          this.destroy(new Error(`${produced - consumed} bytes held between source and sink`));
          return;
        }
        if (produced === 0) {
          produced += MESSAGE.indexOf('\r\n\r\n') + 4;
          this.push(MESSAGE.subarray(0, MESSAGE.indexOf('\r\n\r\n') + 4));
          return;
        }
        if (produced >= TOTAL) {
          this.push(null);
          return;
        }
        produced += block.length;
        this.push(block);
      },
    });
    const sink = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _e, cb) {
        consumed += chunk.length;
        setImmediate(cb);
      },
    });
    await pipeline(source, tap, sink);
  }

  it('a 10 MB message passes with never more than 1 MiB in flight, and is signed', async () => {
    const tap = new DkimSignStream(keyOf('ed25519'));
    await pushThrough(tap);
    expect(tap.signature).toMatch(/^DKIM-Signature: /);
  });

  it('control: a signer that keeps the message fails the same measurement', async () => {
    const { DkimSignStream: Keeping } = createRequire(import.meta.url)('mailauth/lib/dkim/sign.js') as { DkimSignStream: new (o: object) => NodeJS.ReadWriteStream };
    const key = keyOf('ed25519');
    await expect(pushThrough(new Keeping({ signatureData: [{ signingDomain: key.domain, selector: key.selector, privateKey: key.key.reveal() }] }))).rejects.toThrow(/bytes held between source and sink/);
  });
});

describe('sendas queue show', () => {
  it('names the domain and selector a queued message was signed with', async () => {
    const { showEntry } = await import('../../src/cli/queue.js');
    const key = keyOf('ed25519');
    const meta = {
      format: 1 as const,
      id: 'Q1',
      receivedAt: new Date(0).toISOString(),
      client: { address: '127.0.0.1', login: undefined },
      envelope: { originalFrom: 'support@acme.example', eightBit: false },
      identity: null,
      serverName: 'main',
      accountAddress: 'relay@acme.example',
      fromBefore: undefined,
      fromAfter: 'relay@acme.example',
      subject: 'hi',
      size: MESSAGE.length,
      dkimSignature: await dkimSignatureOf(key, MESSAGE),
      notice: false,
      recipients: [],
      attempts: 0,
      nextAttemptAt: undefined,
      lastError: undefined,
    };
    expect(showEntry(meta, 'active', 0)).toContain('DKIM:          signed d=acme.example s=s1 at acceptance');
    expect(showEntry({ ...meta, dkimSignature: undefined }, 'active', 0)).not.toContain('DKIM');
  });
});
