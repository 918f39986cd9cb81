import { generateKeyPairSync } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dkimKeyFacts, dkimTxtRecord, type DkimKeyFacts } from '../../src/config/dkim.js';
import { verifyDkim } from '../support/dkim-verify.js';
import { swaks } from '../support/swaks.js';
import { startTestUpstream } from '../support/upstream.js';
import { headerValues, message, split, startRelay } from './harness.js';

/**
 * DKIM signing end to end: swaks → the real relay → the test upstream, which records the raw
 * bytes; python3-dkim (an implementation independent of sendas and mailauth) verifies them with
 * the public key of the record sendas would have published.
 */

const work = mkdtempSync(join(tmpdir(), 'sendas-dkim-e2e-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const ACCOUNTS = [
  { username: 'relay@relay.example', password: 'server-secret-1' },
  { username: 'support@acme.example', password: 'support-secret-2' },
  { username: 'carol@other.example', password: 'carol-secret-3' },
];

function keyPair(type: 'rsa' | 'ed25519'): { pem: string; facts: DkimKeyFacts } {
  const pem = (type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ed25519')).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { pem, facts: dkimKeyFacts(pem) as DkimKeyFacts };
}

/** acme.example and relay.example have keys of their own (the server account is @relay.example); other.example has none. */
function yaml(upstreamPort: number, delivery: string, acme: string, relay: string): string {
  return `
delivery: ${delivery}
listen:
  max_message_size: 20MB
servers:
  - name: main
    host: 127.0.0.1
    port: ${upstreamPort}
    security: none
    auth: login
    username: relay@relay.example
    password: server-secret-1
channels:
  - name: support
    address: support@acme.example
    override:
      password: support-secret-2
  - name: sales
    address: sales@acme.example
agents:
  - name: carol
    address: carol@other.example
    override:
      password: carol-secret-3
dkim:
  - domain: acme.example
    selector: s2026
    key: ${JSON.stringify(acme)}
  - domain: relay.example
    selector: relay1
    key: ${JSON.stringify(relay)}
`;
}

const EIGHT_BIT = message(
  { From: 'Acme Support <support@acme.example>', To: 'c@example.net', Subject: 'Grüße', 'MIME-Version': '1.0', 'Content-Type': 'text/plain; charset=utf-8', 'Content-Transfer-Encoding': '8bit' },
  'Sehr geehrte Kundin,   \r\nIhre Bestellung über 12 € ist unterwegs.\t\r\n\r\n\r\n',
);

/** A 10 MB PDF, base64 in 76-character lines, written to a file for swaks (never a string in this process). */
let largeFile: Promise<string> | undefined;
const largeMessageFile = () => (largeFile ??= writeLargeMessage());

async function writeLargeMessage(): Promise<string> {
  const file = join(work, 'large.eml');
  const out = createWriteStream(file);
  out.write(['From: support@acme.example', 'To: c@example.net', 'Subject: invoice', 'MIME-Version: 1.0', 'Content-Type: multipart/mixed; boundary=part', '', '--part', 'Content-Type: text/plain', '', 'Attached.', '--part', 'Content-Type: application/pdf; name="big.pdf"', 'Content-Transfer-Encoding: base64', '', ''].join('\r\n'));
  const line = `${Buffer.alloc(57, 0x25).toString('base64')}\r\n`;
  const block = line.repeat(1000);
  for (let written = 0; written < 10 * 1024 * 1024; written += 57_000) if (!out.write(block)) await new Promise<void>((r) => out.once('drain', () => r()));
  out.end('--part--\r\n');
  await new Promise<void>((r) => out.once('finish', () => r()));
  return file;
}

// the four relays are independent: side by side, the wait for swaks and python overlaps
describe.concurrent('DKIM signing', () => {
  it('signs the failure notice sendas writes (From: the default server account) with that domain\'s key', async () => {
    const acme = keyPair('rsa');
    const relayKey = keyPair('ed25519');
    const records = { 'relay1._domainkey.relay.example': dkimTxtRecord(relayKey.facts) };
    const upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true, refuseRecipients: { 'gone@example.net': { code: 550, message: '5.1.1 No such user here' } } });
    const relay = await startRelay(yaml(upstream.port, 'queue', acme.pem, relayKey.pem));
    try {
      const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to: 'gone@example.net', data: message({ From: 'support@acme.example', To: 'gone@example.net', Subject: 'lost' }) });
      expect(r.finalCode).toBe(250);
      const notice = await upstream.nextMessage();
      expect(notice.mailFrom).toBe('');
      expect(await verifyDkim(notice.raw, records)).toMatchObject({ ok: true, d: 'relay.example', s: 'relay1', a: 'ed25519-sha256' });
    } finally {
      await relay.stop();
      await upstream.close();
    }
  });

  for (const delivery of ['queue', 'passthrough'] as const) {
    for (const type of ['rsa', 'ed25519'] as const) {
      it(`delivery ${delivery}, ${type}: the aligned message verifies (8-bit body, 10 MB attachment, From rewritten to the server account's domain); a changed body does not; a domain without a key goes unsigned`, async () => {
        const acme = keyPair(type);
        const relayKey = keyPair(type);
        const records = {
          's2026._domainkey.acme.example': dkimTxtRecord(acme.facts),
          'relay1._domainkey.relay.example': dkimTxtRecord(relayKey.facts),
        };
        const upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true });
        const relay = await startRelay(yaml(upstream.port, delivery, acme.pem, relayKey.pem));
        try {
          const send = (from: string, data: { data: string } | { dataFile: string }) => swaks({ server: '127.0.0.1', port: relay.port, from, to: 'c@example.net', timeoutMs: 60_000, ...data });

          // 8-bit body, From kept (the channel sends with its own account)
          expect((await send('support@acme.example', { data: EIGHT_BIT })).finalCode).toBe(250);
          const small = await upstream.nextMessage();
          const verdict = await verifyDkim(small.raw, records);
          expect(verdict).toMatchObject({ ok: true, signatures: 1, d: 'acme.example', s: 's2026', a: type === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256', c: 'relaxed/relaxed' });
          expect(split(small.raw).body.toString('utf8')).toContain('über 12 €');
          // one changed byte of the body: the test can fail
          const tampered = Buffer.from(small.raw);
          tampered[tampered.lastIndexOf('12')] = '9'.charCodeAt(0);
          expect(await verifyDkim(tampered, records)).toMatchObject({ ok: false });

          // the From is rewritten to the server account (sales has no override): signed for the new From's domain
          expect((await send('sales@acme.example', { data: message({ From: 'Sales <sales@acme.example>', To: 'c@example.net', Subject: 'rewritten' }) })).finalCode).toBe(250);
          const rewritten = await upstream.nextMessage();
          expect(headerValues(split(rewritten.raw).head, 'From')[0]).toContain('relay@relay.example');
          expect(await verifyDkim(rewritten.raw, records)).toMatchObject({ ok: true, d: 'relay.example', s: 'relay1' });

          // 10 MB: queue writes a file of its own, passthrough spools (the signature goes before the body)
          const large = await send('support@acme.example', { dataFile: await largeMessageFile() });
          expect(large.finalCode).toBe(250);
          const big = await upstream.nextMessage(30_000);
          expect(big.raw.length).toBeGreaterThan(10 * 1024 * 1024);
          // python takes a while over 10 MB: checked at the end, while the rest is sent
          const bigVerdict = verifyDkim(big.raw, records);

          // no key for other.example: sent as before, without a signature
          expect((await send('carol@other.example', { data: message({ From: 'carol@other.example', To: 'c@example.net', Subject: 'unsigned' }) })).finalCode).toBe(250);
          const unsigned = await upstream.nextMessage();
          expect(headerValues(split(unsigned.raw).head, 'DKIM-Signature')).toEqual([]);

          const lines = relay.logs.filter((l) => l.result === (delivery === 'queue' ? 'queued' : 'relayed'));
          expect(lines.map((l) => l.dkim)).toEqual(['d=acme.example s=s2026', 'd=relay.example s=relay1', 'd=acme.example s=s2026', undefined]);
          expect(relay.rawLog()).not.toContain('PRIVATE KEY');
          expect(await bigVerdict).toMatchObject({ ok: true, d: 'acme.example' });
          if (delivery === 'passthrough') expect(await readdir(join(relay.dir, 'var/state/dkim-spool'))).toEqual([]);
        } finally {
          await relay.stop();
          await upstream.close();
        }
      }, 90_000);
    }
  }
});
