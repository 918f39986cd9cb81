import { describe, expect, it } from 'vitest';
import { simpleParser } from 'mailparser';
import { RelayError } from '../../src/errors/relay-error.js';
import { header, rewrite, snapshotOf, BASE_YAML } from './helpers.js';
import { LineEnds } from '../../src/reception/line-ends.js';

const msg = (headers: string[], body = 'Hello,\r\nthanks for your mail.\r\n') => `${headers.join('\r\n')}\r\n\r\n${body}`;

async function refusal(p: Promise<unknown>): Promise<RelayError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RelayError);
  return err as RelayError;
}

describe('From alignment (policy.from: rewrite)', () => {
  it('keeps From as it is when the identity signs in with its own account, and applies display_name', async () => {
    const r = await rewrite(msg(['From: Bob <support@acme.example>', 'To: customer@example.net', 'Subject: hi']), { envelopeFrom: 'crm@crm.local' });
    expect(header(r.head, 'From')).toEqual(['Acme Support <support@acme.example>']);
    expect(header(r.head, 'Reply-To')).toEqual([]);
    expect(r.decision.plan.envelopeFrom).toBe('support@acme.example');
    expect(r.decision.resolution.account.username).toBe('support@acme.example');
  });

  it("rewrites From to the server's account for an identity without override, keeping the display name and adding Reply-To", async () => {
    const r = await rewrite(msg(['From: "Sales Team" <sales@acme.example>', 'Subject: quote']), { envelopeFrom: 'sales@acme.example' });
    expect(header(r.head, 'From')).toEqual(['Sales Team <relay@acme.example>']);
    expect(header(r.head, 'Reply-To')).toEqual(['Sales Team <sales@acme.example>']);
    expect(r.decision.plan.envelopeFrom).toBe('relay@acme.example');
  });

  it('does not replace a Reply-To the message already has', async () => {
    const r = await rewrite(msg(['From: sales@acme.example', 'Reply-To: tickets@acme.example', 'Subject: x']));
    expect(header(r.head, 'Reply-To')).toEqual(['tickets@acme.example']);
    expect(header(r.head, 'From')).toEqual(['relay@acme.example']);
  });

  it('drops a Sender that does not match the final From and keeps one that does', async () => {
    const dropped = await rewrite(msg(['From: sales@acme.example', 'Sender: agent7@crm.local', 'Subject: x']));
    expect(header(dropped.head, 'Sender')).toEqual([]);
    const kept = await rewrite(msg(['From: support@acme.example', 'Sender: Support <SUPPORT@acme.example>', 'Subject: x']));
    expect(header(kept.head, 'Sender')).toEqual(['Support <SUPPORT@acme.example>']);
  });

  it('decodes an encoded-word display name and writes it back as a valid encoded word', async () => {
    const r = await rewrite(msg(['From: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <sales@acme.example>', 'Subject: x']));
    const parsed = await simpleParser(r.output);
    expect(parsed.from?.value).toEqual([{ name: 'Jürgen Müller', address: 'relay@acme.example' }]);
    expect(parsed.replyTo?.value).toEqual([{ name: 'Jürgen Müller', address: 'sales@acme.example' }]);
    expect(r.head).toMatch(/^From: =\?UTF-8\?Q\?J=C3=BCrgen/m);
  });

  it('reads a raw UTF-8 display name (RFC 6532) and writes the new From in ASCII', async () => {
    const r = await rewrite(msg(['From: Jürgen Müller <sales@acme.example>', 'Subject: Grüße']));
    const parsed = await simpleParser(r.output);
    expect(parsed.from?.value).toEqual([{ name: 'Jürgen Müller', address: 'relay@acme.example' }]);
    expect(header(r.head, 'From')[0]).toMatch(/^[\x20-\x7e]+$/);
    // the other raw UTF-8 header is left byte for byte
    expect(r.output.includes(Buffer.from('Subject: Grüße\r\n', 'utf8'))).toBe(true);
  });

  it('reads a folded From header', async () => {
    const r = await rewrite(msg(['From: "A rather long display name of the sales team"\r\n <sales@acme.example>', 'Subject: x']));
    expect(header(r.head, 'From')).toEqual(['A rather long display name of the sales team <relay@acme.example>']);
  });

  it('quotes a display name with specials', async () => {
    const r = await rewrite(msg(['From: "Doe, John" <sales@acme.example>', 'Subject: x']));
    expect(header(r.head, 'From')).toEqual(['"Doe, John" <relay@acme.example>']);
    const parsed = await simpleParser(r.output);
    expect(parsed.from?.value[0]?.name).toBe('Doe, John');
  });

  it('takes the display name from a comment', async () => {
    const r = await rewrite(msg(['From: sales@acme.example (Sales Desk)', 'Subject: x']));
    expect(header(r.head, 'From')).toEqual(['Sales Desk <relay@acme.example>']);
  });

  it('matches addresses case-insensitively', async () => {
    const r = await rewrite(msg(['From: ALICE@ACME.EXAMPLE', 'Subject: x']));
    expect(r.decision.resolution.identity?.name).toBe('alice');
    // same address in another spelling: the header is left as the client wrote it
    expect(header(r.head, 'From')).toEqual(['ALICE@ACME.EXAMPLE']);
    expect(r.decision.plan.writeFrom).toBe(false);
  });

  it('matches an IDN domain in Unicode or punycode form and sends with the ASCII form', async () => {
    for (const from of ['info@bücher.example', 'info@xn--bcher-kva.example', 'INFO@BÜCHER.example']) {
      const r = await rewrite(msg([`From: ${from}`, 'Subject: x']));
      expect(r.decision.resolution.identity?.name).toBe('books');
      expect(r.decision.resolution.account.server.name).toBe('backup');
      expect(header(r.head, 'From')).toEqual(['backup@acme.example']);
    }
  });

  it('takes the only member of a group as the From address', async () => {
    const r = await rewrite(msg(['From: Sales: Sales Desk <sales@acme.example>;', 'Subject: x']));
    expect(r.decision.resolution.identity?.name).toBe('sales');
    expect(header(r.head, 'From')).toEqual(['Sales Desk <relay@acme.example>']);
  });

  it('adds a From to a message that has none, found by its envelope sender', async () => {
    const r = await rewrite(msg(['To: customer@example.net', 'Subject: x']), { envelopeFrom: 'alice@acme.example' });
    expect(r.decision.resolution.matchedBy).toBe('envelope-from');
    expect(header(r.head, 'From')).toEqual(['alice@acme.example']);
    expect(header(r.head, 'Reply-To')).toEqual([]);
  });

  it('treats an empty group as no From address', async () => {
    const r = await rewrite(msg(['From: undisclosed-recipients:;', 'Subject: x']), { envelopeFrom: 'sales@acme.example' });
    expect(r.decision.resolution.identity?.name).toBe('sales');
    expect(header(r.head, 'From')).toEqual(['relay@acme.example']);
  });

  it('refuses a From with several addresses rather than guessing', async () => {
    const err = await refusal(rewrite(msg(['From: sales@acme.example, alice@acme.example', 'Subject: x'])));
    expect(err.status).toEqual({ code: 550, enhanced: '5.6.0' });
    expect(err.message).toContain('sales@acme.example, alice@acme.example');
  });

  it('refuses a message with two From header lines', async () => {
    const err = await refusal(rewrite(msg(['From: sales@acme.example', 'From: alice@acme.example', 'Subject: x'])));
    expect(err.status.enhanced).toBe('5.6.0');
    expect(err.message).toContain('2 From header lines');
  });

  it('never lets a display_name inject a header line', async () => {
    const snapshot = snapshotOf(BASE_YAML.replace('display_name: Acme Support', 'display_name: "Acme\\r\\nBcc: victim@example.net"'));
    const r = await rewrite(msg(['From: support@acme.example', 'Subject: x']), { snapshot });
    expect(r.head).not.toMatch(/^Bcc:/m);
    expect(header(r.head, 'From')).toHaveLength(1);
  });
});

describe('no CR, LF or NUL survives in a display name', () => {
  it('an encoded word that decodes to LF or NUL is written back without them: no Bcc line', async () => {
    for (const encoded of ['=?utf-8?Q?x=0ABcc:_evil@x?=', '=?utf-8?B?eA0KQmNjOiBldmlsQHg=?=', '=?utf-8?Q?x=00=0D=0A.=0D=0A?=']) {
      const r = await rewrite(msg([`From: ${encoded} <sales@acme.example>`, 'Subject: x']));
      expect(r.decision.plan.writeFrom).toBe(true);
      expect(r.head).not.toMatch(/^Bcc:/im);
      expect(r.head).not.toMatch(/\x00|\r(?!\n)|(?<!\r)\n|\r\n\.\r\n/);
      expect(header(r.head, 'From')).toHaveLength(1);
      const parsed = await simpleParser(r.output);
      expect(parsed.from?.value[0]?.address).toBe('relay@acme.example');
      expect(parsed.from?.value[0]?.name).not.toMatch(/[\x00-\x1f]/);
    }
  });

  it('a bare LF inside a quoted display name, after the line-end guard (normalize), stays inside From', async () => {
    const raw = Buffer.from('From: "x\nBcc: evil@x" <sales@acme.example>\r\nTo: c@example.net\r\nSubject: s\r\n\r\nbody\r\n');
    const normalized = new LineEnds('normalize').push(raw)!;
    const r = await rewrite(normalized);
    expect(r.head).not.toMatch(/^Bcc:/im);
    expect(header(r.head, 'From')).toEqual(['"x Bcc: evil@x" <relay@acme.example>']);
    expect(header(r.head, 'Reply-To')).toEqual(['"x Bcc: evil@x" <sales@acme.example>']);
  });
});

describe('policy.from: reject', () => {
  const snapshot = snapshotOf(BASE_YAML + 'policy:\n  from: reject\n');

  it('refuses a From that would have to change, naming the required address', async () => {
    const err = await refusal(rewrite(msg(['From: sales@acme.example', 'Subject: x']), { snapshot }));
    expect(err.status).toEqual({ code: 550, enhanced: '5.7.1' });
    expect(err.message).toContain('relay@acme.example');
  });

  it('passes a From that already matches the account, without touching it', async () => {
    const r = await rewrite(msg(['From: Bob <support@acme.example>', 'Sender: x@y.example', 'Subject: x']), { snapshot, envelopeFrom: 'bounce@crm.local' });
    expect(header(r.head, 'From')).toEqual(['Bob <support@acme.example>']);
    expect(header(r.head, 'Sender')).toEqual(['x@y.example']);
    expect(r.decision.plan.envelopeFrom).toBe('support@acme.example');
  });
});

describe('only headers change', () => {
  it('passes 8-bit bytes, long lines and a MIME attachment through byte for byte, whatever the chunking', async () => {
    const body = Buffer.concat([
      Buffer.from('--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'),
      Buffer.from([0xe9, 0xe8, 0xff, 0x80, 0x0d, 0x0a]),
      Buffer.from(`${'x'.repeat(5000)}\r\n`),
      Buffer.from('.leading dot\r\n\r\n\r\n--b1\r\nContent-Type: application/octet-stream\r\n\r\n'),
      Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 256)),
      Buffer.from('\r\n--b1--\r\n'),
    ]);
    const head = Buffer.from('From: sales@acme.example\r\nSubject: attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n');
    for (const chunkSize of [1, 3, 64, 100_000]) {
      const r = await rewrite(Buffer.concat([head, body]), { chunkSize });
      expect(r.body.equals(body)).toBe(true);
    }
  });

  it('adds Received, and Message-ID and Date only when missing', async () => {
    const r = await rewrite(msg(['From: support@acme.example', 'Subject: x']));
    expect(r.head.startsWith('Received: from crm.local (localhost [127.0.0.1])')).toBe(true);
    expect(header(r.head, 'Received')[0]).toContain('by relay.test (sendas) with ESMTP id TESTID for <customer@example.net>; Sat, 21 Nov 2026 12:00:00 +0000');
    expect(header(r.head, 'Message-ID')[0]).toMatch(/^<[0-9a-f-]{36}@acme\.example>$/);
    expect(header(r.head, 'Date')).toEqual(['Sat, 21 Nov 2026 12:00:00 +0000']);

    const kept = await rewrite(msg(['From: support@acme.example', 'Message-ID: <orig@crm.local>', 'Date: Fri, 20 Nov 2026 10:00:00 +0100', 'Subject: x']));
    expect(header(kept.head, 'Message-ID')).toEqual(['<orig@crm.local>']);
    expect(header(kept.head, 'Date')).toEqual(['Fri, 20 Nov 2026 10:00:00 +0100']);
  });

  it('keeps unrelated headers byte for byte, folding included', async () => {
    const folded = 'X-Ticket: 12345;\r\n\tqueue=support;\r\n\tpriority=high';
    const r = await rewrite(msg(['From: sales@acme.example', folded, 'Subject: x']));
    expect(r.head).toContain(`${folded}\r\n`);
  });

  it('handles a message that is only a header section, with no blank line', async () => {
    const r = await rewrite('From: support@acme.example\r\nSubject: no body\r\n');
    const out = r.output.toString();
    expect(out).toContain('Subject: no body\r\n');
    expect(out.endsWith('\r\n\r\n')).toBe(true);
    expect(out.indexOf('\r\n\r\n')).toBe(out.length - 4);
  });

  it('null envelope sender stays null (bounces must not get a return path)', async () => {
    const r = await rewrite(msg(['From: sales@acme.example', 'Subject: Undelivered']));
    expect(r.decision.plan.envelopeFrom).toBe('');
  });

  it('handles bare LF line endings', async () => {
    const r = await rewrite('From: sales@acme.example\nSubject: lf\n\nbody line\n');
    expect(r.output.toString()).toContain('From: relay@acme.example');
    expect(r.output.toString().endsWith('\r\n\r\nbody line\n')).toBe(true);
  });
});
