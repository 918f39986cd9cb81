import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { QueueStore } from '../../src/queue/store.js';
import { ACCOUNTS, headerValues, relayYaml, split, startRelay, type RunningRelay } from './harness.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';

/**
 * The 2023 SMTP smuggling research: an end of data that one receiver reads and another doesn't,
 * followed by a second transaction. Sent as raw bytes (swaks can't), in both listen.bare_newline
 * modes, both delivery modes and both message paths (the journal ≤ 64 KiB, a file of its own
 * above; in passthrough the upstream thread and the streaming pool). The test upstream records
 * the bytes on the wire, which are read the strict way (only CRLF.CRLF ends data) and the lenient
 * way (any CR or LF ends a line, NUL dropped): both must find the same transactions.
 */

const VARIANTS = ['\n.\n', '\n.\r\n', '\r.\r', '\r.\n', '\r\n.\r', '\r.\r\n', '\r\n\x00.\r\n', '\r\n.\r\r\n', '\r\r\n.\r\r\n'];
const SMUGGLED = 'MAIL FROM:<alice@acme.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nFrom: alice@acme.example\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n';
const PADDING = `${'y'.repeat(998)}\r\n`.repeat(72);

/** One SMTP session of raw lines; resolves with the final reply line to each step, and the DATA reply. */
async function rawSession(port: number, data: Buffer): Promise<string[]> {
  const socket = connect(port, '127.0.0.1');
  let buffered = '';
  const replies: string[] = [];
  let waiting: (() => void) | undefined;
  socket.on('data', (c: Buffer) => {
    buffered += c.toString('latin1');
    let i;
    while ((i = buffered.indexOf('\r\n')) >= 0) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 2);
      if (/^\d{3} /.test(line)) {
        replies.push(line);
        waiting?.();
      }
    }
  });
  const next = async (): Promise<string> => {
    while (replies.length === 0) await new Promise<void>((r) => (waiting = r));
    return replies.shift()!;
  };
  const out: string[] = [];
  try {
    out.push(await next());
    for (const cmd of ['EHLO crm.local', 'MAIL FROM:<support@acme.example>', 'RCPT TO:<c@example.net>', 'DATA']) {
      socket.write(`${cmd}\r\n`);
      out.push(await next());
    }
    socket.write(data);
    out.push(await next());
    socket.write('QUIT\r\n');
    out.push(await next());
  } finally {
    socket.destroy();
  }
  return out;
}

/**
 * The messages a receiver finds in a client's bytes (DATA … "."), reading line ends strictly or
 * leniently. A transaction the relay abandoned (its client's message was refused mid-stream, the
 * connection dropped before the end) is not a message.
 */
function transactions(bytes: Buffer, reading: 'strict' | 'lenient'): number {
  const text = bytes.toString('latin1');
  // eslint-disable-next-line no-control-regex
  const lines = reading === 'strict' ? text.split('\r\n') : text.replace(/\x00/g, '').split(/\r\n|\r|\n/);
  let inData = false;
  let count = 0;
  for (const line of lines) {
    if (inData) {
      if (line === '.') {
        inData = false;
        count++;
      }
    } else if (/^DATA$/i.test(line)) {
      inData = true;
    }
  }
  return count;
}

function smuggling(variant: string, size: 'small' | 'large'): Buffer {
  const head = 'From: support@acme.example\r\nTo: c@example.net\r\nSubject: smuggle\r\n\r\nfirst line\r\n';
  return Buffer.from(`${head}${size === 'large' ? PADDING : ''}text${variant}${SMUGGLED}.\r\nQUIT\r\n`, 'latin1');
}

const show = (v: string) => JSON.stringify(v).replace(/\\u0000/g, '\\x00');

for (const delivery of ['queue', 'passthrough'] as const) {
  for (const mode of ['normalize', 'reject'] as const) {
    describe(`SMTP smuggling: delivery ${delivery}, listen.bare_newline ${mode}`, () => {
      let upstream: TestUpstream;
      let relay: RunningRelay;
      beforeAll(async () => {
        upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true, recordWire: true });
        relay = await startRelay(relayYaml(upstream.port, '', '', delivery).replace('  max_message_size: 2MB\n', `  max_message_size: 2MB\n  bare_newline: ${mode}\n`));
      });
      afterAll(async () => {
        await relay.stop();
        await upstream.close();
      });

      const cases = VARIANTS.flatMap((v) => (['small', 'large'] as const).map((size) => [show(v), size, v] as const));
      it.each(cases)('%s then a second transaction (%s message): one message at most, no end of data on the wire', async (_shown, size, variant) => {
        const before = upstream.messages.length;
        const replies = await rawSession(relay.port, smuggling(variant, size));
        expect(replies.slice(0, 5).map((r) => r.slice(0, 3))).toEqual(['220', '250', '250', '250', '354']);
        // the client's data was read to its end: the QUIT after it is answered, not taken as text
        expect(replies[6]).toMatch(/^221 /);
        const dataReply = replies[5]!;
        // "text" is line 6 (78 after the padding); a variant that starts with CRLF ends it cleanly
        const line = (size === 'small' ? 6 : 78) + (variant.startsWith('\r\n') ? 1 : 0);
        if (variant.includes('\x00')) {
          expect(dataReply).toBe(`550 5.6.0 Message line ${line} contains a NUL byte, which mail may not carry; remove it and send the message again`);
        } else if (mode === 'reject') {
          expect(dataReply).toMatch(new RegExp(`^550 5\\.5\\.2 Message line ${line}(?: ends with a bare LF| contains a bare CR); send CRLF line endings$`));
        } else {
          expect(dataReply).toMatch(delivery === 'queue' ? /^250 2\.0\.0 Queued as / : /^250 2\.0\.0 Relayed as /);
          const got = await upstream.nextMessage();
          expect(got.rcptTo).toEqual(['c@example.net']);
          expect(headerValues(split(got.raw).head, 'Subject')).toEqual(['smuggle']);
          // the smuggled commands arrived as text of the one message (a dropped bare CR joins "text." and the MAIL FROM line)
          expect(got.raw.toString('latin1')).toContain('MAIL FROM:<alice@acme.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n');
        }
        if (delivery === 'queue') {
          const queued = () => new QueueStore(`${relay.dir}/var/queue`).list('active');
          // refused: never queued (the reply came after the entry was discarded); delivered: removed right after the upstream's 250
          if (!dataReply.startsWith('250')) expect(await queued()).toEqual([]);
          else await vi.waitFor(async () => expect(await queued()).toEqual([]), { timeout: 5000, interval: 20 });
        }
        expect(upstream.messages.length - before).toBe(dataReply.startsWith('250') ? 1 : 0);
        expect(upstream.messages.map((m) => m.rcptTo).flat()).not.toContain('victim@example.net');
        for (const bytes of upstream.wire.map((w) => Buffer.concat(w))) {
          // eslint-disable-next-line no-control-regex
          expect(bytes.toString('latin1')).not.toMatch(/\x00|\r(?!\n)|(?<!\r)\n/);
          expect(transactions(bytes, 'lenient')).toBe(transactions(bytes, 'strict'));
        }
        expect(upstream.wire.map((w) => transactions(Buffer.concat(w), 'strict')).reduce((a, b) => a + b, 0)).toBe(upstream.messages.length);
      });

      it('a bare LF inside the From display name never becomes a header line of its own', async () => {
        const data = Buffer.from('From: "x\nBcc: evil@x" <sales@acme.example>\r\nTo: c@example.net\r\nSubject: display name\r\n\r\nbody\r\n.\r\n');
        const replies = await rawSession(relay.port, data);
        if (mode === 'reject') {
          expect(replies[5]).toBe('550 5.5.2 Message line 1 ends with a bare LF; send CRLF line endings');
          return;
        }
        expect(replies[5]).toMatch(/^250 /);
        const { head } = split((await upstream.nextMessage()).raw);
        expect(headerValues(head, 'Bcc')).toEqual([]);
        expect(head).not.toMatch(/^Bcc:/im);
        expect(headerValues(head, 'From')).toEqual(['"x Bcc: evil@x" <relay@acme.example>']);
      });
    });
  }
}
