import { readdir } from 'node:fs/promises';
import { simpleParser } from 'mailparser';
import { afterEach, describe, expect, it } from 'vitest';
import { QueueStore } from '../../src/queue/store.js';
import { swaks } from '../support/swaks.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, relayYaml, startRelay, type RunningRelay } from './harness.js';

const KB = 1024;

/** A message as a CRM writes it: a text part and one PDF of `bytes` (base64, 76-character lines). */
function withAttachment(name: string, bytes: number, subject: string): string {
  const pdf = (Buffer.alloc(bytes, 0x25).toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
  return [
    'From: support@acme.example',
    'To: c@example.net',
    `Subject: ${subject}`,
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary=part',
    '',
    '--part',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Your invoice is attached.',
    '--part',
    `Content-Type: application/pdf; name="${name}"`,
    'Content-Transfer-Encoding: base64',
    `Content-Disposition: attachment; filename="${name}"`,
    '',
    pdf,
    '--part--',
    '',
  ].join('\r\n');
}

describe('listen.max_attachment_size', () => {
  const started: { relay: RunningRelay; upstream: TestUpstream }[] = [];
  afterEach(async () => {
    for (const { relay, upstream } of started.splice(0)) {
      await relay.stop();
      await upstream.close();
    }
  });

  for (const delivery of ['queue', 'passthrough'] as const) {
    it(`delivery ${delivery}: 552 5.3.4 naming the file and its size, after the whole message; nothing stored or relayed; a smaller one passes`, async () => {
      const upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true });
      const relay = await startRelay(relayYaml(upstream.port, '', '', delivery).replace('  max_message_size: 2MB\n', '  max_message_size: 2MB\n  max_attachment_size: 100KB\n'));
      started.push({ relay, upstream });
      const send = (data: string) => swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to: 'c@example.net', data });

      // 250 KB decoded is about 340 KB on the wire: the journal's limit is 64 KiB, so the queue was writing a file of its own
      const refused = await send(withAttachment('report.pdf', 250 * KB, 'too big'));
      expect(refused.finalReply).toBe('552 5.3.4 Attachment "report.pdf" is 250 KB; this relay accepts attachments up to 100 KB');
      const line = await relay.waitForLog((l) => l.result === 'refused');
      expect(line).toMatchObject({ kind: 'message', code: 552, enhanced: '5.3.4' });
      if (delivery === 'queue') {
        expect(await new QueueStore(`${relay.dir}/var/queue`).list('active')).toEqual([]);
        expect(await readdir(`${relay.dir}/var/queue/tmp`)).toEqual([]);
      }

      const ok = await send(withAttachment('invoice.pdf', 60 * KB, 'fits'));
      expect(ok.finalCode).toBe(250);
      const got = await upstream.nextMessage();
      const parsed = await simpleParser(got.raw);
      expect(parsed.subject).toBe('fits');
      expect(parsed.attachments.map((a) => [a.filename, a.size])).toEqual([['invoice.pdf', 60 * KB]]);
      expect(upstream.messages).toHaveLength(1);
    });
  }
});
