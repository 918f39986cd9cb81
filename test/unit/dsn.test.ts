import { describe, expect, it } from 'vitest';
import { simpleParser, type Attachment, type ParsedMail } from 'mailparser';
import { composeNotice, type FailedRecipient, type NoticeInput } from '../../src/notify/dsn.js';

const NO_SUCH_USER: FailedRecipient = {
  address: 'x@y',
  status: '5.1.1',
  diagnostic: '550 5.1.1 No such user',
  reason: 'upstream main (smtp.acme.example:587) refused recipient x@y: 550 5.1.1 No such user',
  remoteMta: 'smtp.acme.example',
  lastAttemptAt: new Date(Date.UTC(2026, 10, 21, 12, 0, 7)),
};

const ORIGINAL_HEADERS = [
  'Received: from crm.local ([127.0.0.1]) by relay.acme.example with ESMTP id 57QTH5EM8L9B',
  'From: "Sales Team" <relay@acme.example>',
  'To: x@y',
  'Subject: Your quote',
  'Message-ID: <q1@acme.example>',
  '',
  '',
].join('\r\n');

function input(overrides: Partial<NoticeInput> = {}): NoticeInput {
  return {
    reportingMta: 'relay.acme.example',
    queueId: '57QTH5EM8L9B',
    arrivalDate: new Date(Date.UTC(2026, 10, 21, 12, 0, 0)),
    from: { name: 'Mail Delivery System', address: 'relay@acme.example' },
    to: 'crm-bounces@crm.local',
    recipients: [NO_SUCH_USER],
    originalHeaders: Buffer.from(ORIGINAL_HEADERS),
    originalSubject: 'Your quote',
    date: new Date(Date.UTC(2026, 10, 21, 12, 0, 9)),
    messageIdDomain: 'acme.example',
    ...overrides,
  };
}

/** The notice as raw text (latin1: one char per byte), split into its header section and body. */
function split(raw: Buffer): { head: string; body: string } {
  const text = raw.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  return { head: text.slice(0, end + 2), body: text.slice(end + 4) };
}

/** Unfolded header lines of a header section, as "Name: value". */
function headerLines(head: string): string[] {
  return head
    .replace(/\r\n[ \t]/g, ' ')
    .split('\r\n')
    .filter(Boolean);
}

interface Part {
  head: string;
  body: Buffer;
}

/** The top-level parts of the multipart body, split on the boundary the Content-Type declares. */
function parts(raw: Buffer): Part[] {
  const { head, body } = split(raw);
  const boundary = /boundary="?([^";\r\n]+)"?/.exec(head.replace(/\r\n[ \t]/g, ' '))?.[1];
  if (!boundary) throw new Error('no boundary');
  // [preamble, "\r\n<part>\r\n", ..., "--\r\n"]: a part starts after its delimiter line and
  // ends before the CRLF that belongs to the next delimiter (RFC 2046 §5.1.1)
  const segments = body.split(`--${boundary}`);
  expect(segments.at(-1)).toBe('--\r\n');
  return segments.slice(1, -1).map((segment) => {
    const p = segment.slice(2, -2);
    const end = p.indexOf('\r\n\r\n');
    return { head: p.slice(0, end + 2), body: Buffer.from(p.slice(end + 4), 'latin1') };
  });
}

async function parse(raw: Buffer): Promise<ParsedMail> {
  // keepDeliveryStatus: mailparser otherwise appends the message/delivery-status text to `text`
  return simpleParser(raw, { keepDeliveryStatus: true });
}

function attachment(mail: ParsedMail, contentType: string): Attachment {
  const found = mail.attachments.find((a) => a.contentType === contentType);
  expect(found, `no ${contentType} part`).toBeDefined();
  return found!;
}

/** The blocks of a delivery-status body: per-message fields first, then one per recipient. */
function dsnBlocks(text: string): string[][] {
  return text
    .trim()
    .split(/\r?\n\r?\n/)
    .map((b) => b.split(/\r?\n/));
}

describe('composeNotice: one recipient', () => {
  it('addresses the notice to the envelope sender and parses with mailparser', async () => {
    const raw = await composeNotice(input());
    const mail = await parse(raw);
    expect(mail.from?.value).toEqual([{ name: 'Mail Delivery System', address: 'relay@acme.example' }]);
    expect(Array.isArray(mail.to) ? undefined : mail.to?.value).toEqual([{ name: '', address: 'crm-bounces@crm.local' }]);
    expect(mail.subject).toBe('Undelivered Mail Returned to Sender: Your quote');
    expect(mail.date?.toISOString()).toBe('2026-11-21T12:00:09.000Z');
    expect(mail.messageId).toMatch(/^<[0-9a-f]{24}@acme\.example>$/);
    expect(mail.headers.get('auto-submitted')).toBe('auto-replied');
    expect(mail.headers.get('x-sendas-queue-id')).toBe('57QTH5EM8L9B');
    expect(mail.headers.get('mime-version')).toBe('1.0');
  });

  it('writes the RFC 3464 fields into the message/delivery-status part', async () => {
    const mail = await parse(await composeNotice(input()));
    const status = attachment(mail, 'message/delivery-status').content.toString('utf8');
    expect(status).toContain('Final-Recipient: rfc822; x@y');
    expect(status).toContain('Action: failed');
    expect(status).toContain('Status: 5.1.1');
    expect(status).toContain('Diagnostic-Code: smtp; 550 5.1.1 No such user');
    expect(dsnBlocks(status)).toEqual([
      ['Reporting-MTA: dns; relay.acme.example', 'Arrival-Date: Sat, 21 Nov 2026 12:00:00 +0000', 'X-Sendas-Queue-ID: 57QTH5EM8L9B'],
      [
        'Final-Recipient: rfc822; x@y',
        'Action: failed',
        'Status: 5.1.1',
        'Remote-MTA: dns; smtp.acme.example',
        'Diagnostic-Code: smtp; 550 5.1.1 No such user',
        'Last-Attempt-Date: Sat, 21 Nov 2026 12:00:07 +0000',
      ],
    ]);
  });

  it('leaves out Remote-MTA, Diagnostic-Code and Last-Attempt-Date when they are not known', async () => {
    const mail = await parse(await composeNotice(input({ recipients: [{ address: 'x@y', status: '5.4.4', reason: 'no upstream route for y' }] })));
    const blocks = dsnBlocks(attachment(mail, 'message/delivery-status').content.toString('utf8'));
    expect(blocks[1]).toEqual(['Final-Recipient: rfc822; x@y', 'Action: failed', 'Status: 5.4.4']);
  });

  it('explains in the text part what failed, why, and the queue id', async () => {
    const mail = await parse(await composeNotice(input()));
    const text = mail.text ?? '';
    expect(text).toContain('This is the mail relay at relay.acme.example.');
    expect(text).toContain('Your message could not be delivered to the following recipient(s):');
    expect(text).toContain('  x@y\n');
    // the reason is wrapped; unwrapped, it reads as sendas's sentence
    expect(text.replace(/\n +/g, ' ')).toContain(NO_SUCH_USER.reason);
    expect(text).toContain('57QTH5EM8L9B');
    expect(text).not.toContain('gave up');
    expect(text).not.toContain('given up');
    // the delivery-status part is not mixed into the text
    expect(text).not.toContain('Final-Recipient');
  });

  it('attaches the original header section, without the body and without the blank line', async () => {
    const withBody = Buffer.from(ORIGINAL_HEADERS + 'SECRET BODY\r\n');
    const mail = await parse(await composeNotice(input({ originalHeaders: withBody })));
    const headers = attachment(mail, 'text/rfc822-headers').content.toString('utf8');
    expect(headers).toBe(ORIGINAL_HEADERS.replace(/\r\n\r\n$/, '\r\n'));
    const noBlankLine = await parse(await composeNotice(input({ originalHeaders: Buffer.from(ORIGINAL_HEADERS.trimEnd()) })));
    expect(attachment(noBlankLine, 'text/rfc822-headers').content.toString('utf8')).toBe(headers);
  });

  it('turns bare LF and bare CR line ends in the original headers into CRLF', async () => {
    const raw = await composeNotice(input({ originalHeaders: Buffer.from('From: a@b\nSubject: lf only\rX-Cr: yes\n\n') }));
    const third = parts(raw)[2]!;
    expect(third.body.toString('latin1')).toBe('From: a@b\r\nSubject: lf only\r\nX-Cr: yes\r\n');
    expect(raw.toString('latin1')).not.toMatch(/\r(?!\n)|(?<!\r)\n/);
  });
});

describe('composeNotice: several recipients', () => {
  const recipients: FailedRecipient[] = [
    NO_SUCH_USER,
    {
      address: 'big@files.example',
      status: '5.3.4',
      diagnostic: '552 5.3.4 Message size exceeds fixed limit',
      reason: 'upstream main (smtp.acme.example:587) refused the message for big@files.example: 552 5.3.4 Message size exceeds fixed limit',
      remoteMta: 'smtp.acme.example',
    },
    { address: 'slow@later.example', status: '4.4.1', reason: 'upstream main (smtp.acme.example:587) did not answer (connection timed out)' },
  ];

  it('writes one per-recipient block each, in order, with its own status', async () => {
    const mail = await parse(await composeNotice(input({ recipients })));
    const blocks = dsnBlocks(attachment(mail, 'message/delivery-status').content.toString('utf8'));
    expect(blocks).toHaveLength(4);
    expect(blocks[1]).toContain('Final-Recipient: rfc822; x@y');
    expect(blocks[1]).toContain('Status: 5.1.1');
    expect(blocks[2]).toEqual([
      'Final-Recipient: rfc822; big@files.example',
      'Action: failed',
      'Status: 5.3.4',
      'Remote-MTA: dns; smtp.acme.example',
      'Diagnostic-Code: smtp; 552 5.3.4 Message size exceeds fixed limit',
    ]);
    expect(blocks[3]).toEqual(['Final-Recipient: rfc822; slow@later.example', 'Action: failed', 'Status: 4.4.1']);
    for (const block of blocks.slice(1)) expect(block.filter((l) => l.startsWith('Action:'))).toEqual(['Action: failed']);
  });

  it('lists every recipient with its reason in the text part', async () => {
    const mail = await parse(await composeNotice(input({ recipients })));
    const text = (mail.text ?? '').replace(/\n +/g, ' ');
    for (const r of recipients) {
      expect(text).toContain(r.address);
      expect(text).toContain(r.reason);
    }
    expect(text.indexOf('x@y')).toBeLessThan(text.indexOf('big@files.example'));
    expect(text.indexOf('big@files.example')).toBeLessThan(text.indexOf('slow@later.example'));
  });

  it('writes a status that is not a 4.x.x or 5.x.x code as 5.0.0', async () => {
    const mail = await parse(await composeNotice(input({ recipients: [{ ...NO_SUCH_USER, status: '2.0.0' }, { ...NO_SUCH_USER, address: 'b@y', status: 'nonsense' }] })));
    const blocks = dsnBlocks(attachment(mail, 'message/delivery-status').content.toString('utf8'));
    expect(blocks[1]).toContain('Status: 5.0.0');
    expect(blocks[2]).toContain('Status: 5.0.0');
  });
});

describe('composeNotice: a message that expired in the queue', () => {
  it('says how long the relay tried and that it gave up, and keeps the last temporary status', async () => {
    const recipient: FailedRecipient = {
      address: 'x@y',
      status: '4.4.1',
      diagnostic: '421 4.4.1 Connection timed out',
      reason: 'upstream main (smtp.acme.example:587) did not answer: 421 4.4.1 Connection timed out',
      remoteMta: 'smtp.acme.example',
    };
    const mail = await parse(await composeNotice(input({ recipients: [recipient], gaveUpAfter: '2 days and 7 attempts' })));
    const text = (mail.text ?? '').replace(/\n/g, ' ');
    expect(text).toContain('The relay kept trying to deliver your message for 2 days and 7 attempts and has now given up.');
    expect(text).toContain('send the message again later');
    const blocks = dsnBlocks(attachment(mail, 'message/delivery-status').content.toString('utf8'));
    expect(blocks[1]).toContain('Action: failed');
    expect(blocks[1]).toContain('Status: 4.4.1');
    expect(blocks[1]).toContain('Diagnostic-Code: smtp; 421 4.4.1 Connection timed out');
  });
});

describe('composeNotice: subject', () => {
  it('encodes a non-ASCII subject as RFC 2047 encoded words', async () => {
    const raw = await composeNotice(input({ originalSubject: 'Grüße aus Köln — Angebot' }));
    const { head } = split(raw);
    expect(head).toMatch(/^[\x20-\x7e\r\n\t]*$/); // the header section is pure ASCII
    const subject = headerLines(head).find((l) => l.startsWith('Subject:'));
    expect(subject).toMatch(/=\?UTF-8\?[QB]\?/);
    expect((await parse(raw)).subject).toBe('Undelivered Mail Returned to Sender: Grüße aus Köln — Angebot');
  });

  it('has no ": …" suffix when the original message had no subject', async () => {
    expect((await parse(await composeNotice(input({ originalSubject: undefined })))).subject).toBe('Undelivered Mail Returned to Sender');
    expect((await parse(await composeNotice(input({ originalSubject: '  \r\n ' })))).subject).toBe('Undelivered Mail Returned to Sender');
  });
});

describe('composeNotice: 8-bit original headers', () => {
  it('keeps raw UTF-8 header bytes unchanged under 8bit, declaring charset=utf-8', async () => {
    const original = Buffer.from('From: Jörg Müller <jm@bücher.example>\r\nSubject: Grüße\r\n\r\n', 'utf8');
    const raw = await composeNotice(input({ originalHeaders: original }));
    const third = parts(raw)[2]!;
    expect(third.head).toMatch(/^Content-Type: text\/rfc822-headers; charset=utf-8\r\n/m);
    expect(third.head).toMatch(/^Content-Transfer-Encoding: 8bit\r\n/m);
    expect(third.body.equals(original.subarray(0, original.length - 2))).toBe(true);
    const mail = await parse(raw);
    expect(attachment(mail, 'text/rfc822-headers').content.toString('utf8')).toBe('From: Jörg Müller <jm@bücher.example>\r\nSubject: Grüße\r\n');
  });

  it('keeps bytes that are not UTF-8 (legacy Latin-1) as they are, claiming no charset', async () => {
    const original = Buffer.concat([Buffer.from('Subject: Gr'), Buffer.from([0xfc, 0xdf]), Buffer.from('e\r\n')]);
    const raw = await composeNotice(input({ originalHeaders: original }));
    const third = parts(raw)[2]!;
    expect(third.head).toMatch(/^Content-Type: text\/rfc822-headers\r\n/m);
    expect(third.head).toMatch(/^Content-Transfer-Encoding: 8bit\r\n/m);
    expect(third.body.equals(original)).toBe(true);
  });

  it('uses 7bit for ASCII headers and quoted-printable for a line 8bit cannot carry', async () => {
    expect(parts(await composeNotice(input()))[2]!.head).toMatch(/^Content-Transfer-Encoding: 7bit\r\n/m);
    const long = Buffer.from(`X-Long: ${'a'.repeat(1200)}\r\nSubject: Gr\u00fc\u00dfe\r\n`, 'utf8');
    const raw = await composeNotice(input({ originalHeaders: long }));
    const third = parts(raw)[2]!;
    expect(third.head).toMatch(/^Content-Transfer-Encoding: quoted-printable\r\n/m);
    expect(third.body.toString('latin1').split('\r\n').every((l) => l.length <= 76)).toBe(true);
    expect(attachment(await parse(raw), 'text/rfc822-headers').content.equals(long)).toBe(true);
    const nul = Buffer.from('Subject: a\0b\r\n', 'latin1');
    const withNul = await composeNotice(input({ originalHeaders: nul }));
    expect(parts(withNul)[2]!.head).toMatch(/^Content-Transfer-Encoding: quoted-printable\r\n/m);
    expect(withNul.includes(0)).toBe(false);
    expect(attachment(await parse(withNul), 'text/rfc822-headers').content.equals(nul)).toBe(true);
  });
});

describe('composeNotice: structure', () => {
  it('is a multipart/report of report-type delivery-status with three parts in order', async () => {
    const raw = await composeNotice(input());
    const { head } = split(raw);
    const lines = headerLines(head);
    expect(lines.map((l) => l.slice(0, l.indexOf(':')))).toEqual([
      'From',
      'To',
      'Subject',
      'Date',
      'Message-ID',
      'MIME-Version',
      'Auto-Submitted',
      'X-Sendas-Queue-ID',
      'Content-Type',
    ]);
    expect(lines).toContain('Auto-Submitted: auto-replied');
    expect(lines.find((l) => l.startsWith('Content-Type:'))).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status; boundary="?[^"]+"?$/);

    const [text, status, headers, extra] = parts(raw);
    expect(extra).toBeUndefined();
    expect(text!.head).toMatch(/^Content-Type: text\/plain; charset=utf-8\r\n/m);
    expect(text!.head).toMatch(/^Content-Transfer-Encoding: 7bit\r\n/m);
    expect(status!.head).toMatch(/^Content-Type: message\/delivery-status\r\n/m);
    expect(status!.head).toMatch(/^Content-Transfer-Encoding: 7bit\r\n/m);
    expect(headers!.head).toMatch(/^Content-Type: text\/rfc822-headers\r\n/m);

    const mail = await parse(raw);
    expect(mail.headers.get('content-type')).toMatchObject({ value: 'multipart/report', params: { 'report-type': 'delivery-status' } });
    expect(mail.attachments.map((a) => a.contentType)).toEqual(['message/delivery-status', 'text/rfc822-headers']);
  });

  it('writes the delivery-status body as plain field lines: no encoding, no folding', async () => {
    const longReply = `550 5.7.1 ${'Message rejected by policy, see https://help.example/policy '.repeat(3).trim()}`;
    const raw = await composeNotice(input({ recipients: [{ ...NO_SUCH_USER, diagnostic: longReply }] }));
    const body = parts(raw)[1]!.body.toString('latin1');
    expect(body).toContain(`\r\nDiagnostic-Code: smtp; ${longReply}\r\n`);
    expect(body).not.toMatch(/=\r\n|=[0-9A-F]{2}/);
    // every line is a field or a block separator; none is a continuation
    for (const line of body.replace(/\r\n$/, '').split('\r\n')) expect(line === '' || /^[A-Za-z-]+: /.test(line)).toBe(true);
  });

  it('writes a non-ASCII recipient as RFC 6533 utf-8 xtext and non-ASCII diagnostic text as \\x{HEX}', async () => {
    const raw = await composeNotice(input({ recipients: [{ ...NO_SUCH_USER, address: 'jörg@bücher.example', diagnostic: '550 5.1.1 Empfänger unbekannt' }] }));
    const body = parts(raw)[1]!.body.toString('latin1');
    expect(body).toMatch(/^[\x20-\x7e\r\n]*$/);
    expect(body).toContain('Final-Recipient: utf-8; j\\x{F6}rg@b\\x{FC}cher.example\r\n');
    expect(body).toContain('Diagnostic-Code: smtp; 550 5.1.1 Empf\\x{E4}nger unbekannt\r\n');
    expect((await parse(raw)).text).toContain('jörg@bücher.example');
  });

  it('joins a multi-line upstream reply into one Diagnostic-Code line', async () => {
    const raw = await composeNotice(input({ recipients: [{ ...NO_SUCH_USER, diagnostic: '550-5.1.1 No such user\r\n550 5.1.1 Try again with a valid address' }] }));
    expect(parts(raw)[1]!.body.toString('latin1')).toContain('\r\nDiagnostic-Code: smtp; 550-5.1.1 No such user 550 5.1.1 Try again with a valid address\r\n');
  });
});

describe('composeNotice: header injection', () => {
  it('never lets CR/LF in addresses, names or the subject start a header line', async () => {
    const raw = await composeNotice(
      input({
        to: 'victim@crm.local\r\nBcc: spy@evil.example',
        from: { name: 'Mail Delivery System\r\nX-Injected: yes', address: 'relay@acme.example' },
        originalSubject: 'hello\r\nBcc: spy@evil.example\r\n\r\nbody?',
        queueId: '57QTH5EM8L9B\r\nX-Injected: queue',
      }),
    );
    const { head } = split(raw);
    const names = headerLines(head).map((l) => l.slice(0, l.indexOf(':')).toLowerCase());
    expect(names).not.toContain('bcc');
    expect(names).not.toContain('x-injected');
    // every line of the header section is a field or a folded continuation
    for (const line of head.replace(/\r\n$/, '').split('\r\n')) expect(line).toMatch(/^([A-Za-z-]+: |[ \t])/);
    const mail = await parse(raw);
    expect(mail.bcc).toBeUndefined();
    expect(mail.headers.has('x-injected')).toBe(false);
    expect(mail.subject).toBe('Undelivered Mail Returned to Sender: hello Bcc: spy@evil.example body?');
    const to = Array.isArray(mail.to) ? [] : (mail.to?.value ?? []);
    expect(to).toHaveLength(1);
    expect(mail.from?.value).toHaveLength(1);
    expect(mail.from?.value[0]?.address).toBe('relay@acme.example');
  });

  it('never lets CR/LF in recipient data add a delivery-status field', async () => {
    const raw = await composeNotice(
      input({
        reportingMta: 'relay.acme.example\r\nX-Injected: mta',
        recipients: [
          {
            address: 'x@y\r\nAction: delivered',
            status: '5.1.1',
            diagnostic: '550 5.1.1 No such user\nStatus: 2.0.0\r\n\r\nFinal-Recipient: rfc822; fake@evil.example',
            reason: 'refused\r\nsomething',
            remoteMta: 'smtp.acme.example\rAction: delivered',
            lastAttemptAt: new Date(Number.NaN),
          },
        ],
      }),
    );
    const body = parts(raw)[1]!.body.toString('latin1');
    expect(body).not.toMatch(/\r(?!\n)|(?<!\r)\n/); // no bare CR or LF a parser might take for a line end
    const blocks = dsnBlocks(body);
    expect(blocks).toHaveLength(2);
    const names = blocks.flat().map((l) => l.slice(0, l.indexOf(':')));
    expect(names).toEqual(['Reporting-MTA', 'Arrival-Date', 'X-Sendas-Queue-ID', 'Final-Recipient', 'Action', 'Status', 'Remote-MTA', 'Diagnostic-Code']);
    expect(blocks[1]).toContain('Action: failed');
    expect(blocks[1]).toContain('Status: 5.1.1');
  });

  it('keeps a To address with specials to one recipient', async () => {
    const mail = await parse(await composeNotice(input({ to: 'a@b.example, c@d.example' })));
    const to = Array.isArray(mail.to) ? [] : (mail.to?.value ?? []);
    expect(to).toHaveLength(1);
  });
});

describe('composeNotice: input a notice cannot be made from', () => {
  it('refuses a null envelope sender (never bounce a bounce) and an empty recipient list', async () => {
    await expect(composeNotice(input({ to: '' }))).rejects.toThrow(TypeError);
    await expect(composeNotice(input({ to: '<>' }))).rejects.toThrow(TypeError);
    await expect(composeNotice(input({ recipients: [] }))).rejects.toThrow(TypeError);
    await expect(composeNotice(input({ date: new Date(Number.NaN) }))).rejects.toThrow(TypeError);
  });
});

describe('composeNotice: the fix for the mail administrator', () => {
  const denied = (address: string): FailedRecipient => ({
    address,
    status: '5.7.60',
    diagnostic: '550 5.7.60 SMTP; Client does not have permissions to send as this sender',
    reason: 'upstream m365 refused the sender sales@contoso.com for account agent@contoso.com',
    fix: 'grant agent@contoso.com Send As on sales@contoso.com: Add-RecipientPermission -Identity sales@contoso.com -Trustee agent@contoso.com -AccessRights SendAs',
  });

  it('says once, in a paragraph addressed to the administrator, what to change; never in the delivery-status part', async () => {
    const raw = await composeNotice(input({ recipients: [denied('a@customer.example'), denied('b@customer.example'), NO_SUCH_USER] }));
    const mail = await parse(raw);
    const text = (mail.text ?? '').replace(/\s+/g, ' ');
    expect(text).toContain('For your mail administrator, what to change on the relay or the mail account: - grant agent@contoso.com Send As on sales@contoso.com: Add-RecipientPermission');
    expect(text.split('Add-RecipientPermission').length - 1).toBe(1);
    const status = mail.attachments.find((a) => a.contentType === 'message/delivery-status');
    expect(status?.content.toString()).not.toContain('Add-RecipientPermission');
  });

  it('has no such paragraph when no recipient has a fix', async () => {
    expect((await parse(await composeNotice(input()))).text).not.toContain('mail administrator, what to change');
  });
});
