import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { simpleParser } from 'mailparser';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { ACCOUNTS, SECRETS, headerValues, message, relayYaml, split, startRelay, type RunningRelay } from './harness.js';

/**
 * The relay's promises, end to end: swaks (a real SMTP client) → the real Relay object →
 * a test upstream that checks each account's own password, refuses a MAIL FROM that doesn't
 * match the login (as Microsoft 365 does) and records exactly what it received.
 */
describe('relay end to end', () => {
  let upstream: TestUpstream;
  let relay: RunningRelay;
  const allLogs: string[] = [];

  beforeAll(async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true });
    relay = await startRelay(relayYaml(upstream.port));
  });
  afterAll(async () => {
    allLogs.push(relay.rawLog());
    await relay.stop();
    await upstream.close();
    // whatever happened in this file, no password may appear in any log line
    const log = allLogs.join('\n');
    for (const secret of SECRETS) expect(log).not.toContain(secret);
  });
  /** Messages the upstream received since the call, for asserting that nothing was relayed. */
  const countFrom = () => {
    const start = upstream.messages.length;
    return () => upstream.messages.length - start;
  };

  const send = (opts: Partial<Parameters<typeof swaks>[0]> & { data: string | Buffer }) =>
    swaks({ server: '127.0.0.1', port: relay.port, from: 'crm@crm.local', to: 'customer@example.net', ...opts });

  it('sends as a channel with override: signs in with the channel account, From and envelope are the channel', async () => {
    const data = message({ From: 'Bob Agent <support@acme.example>', To: 'customer@example.net', Subject: 'Your ticket' });
    const r = await send({ from: 'support@acme.example', data });
    expect(r.finalCode).toBe(250);
    expect(r.finalReply).toMatch(/^250 2\.0\.0 Relayed as support@acme\.example through main/);
    const got = await upstream.nextMessage();
    expect(got.login).toBe('support@acme.example');
    expect(got.mailFrom).toBe('support@acme.example');
    const { head, body } = split(got.raw);
    expect(headerValues(head, 'From')).toEqual(['Acme Support <support@acme.example>']);
    expect(headerValues(head, 'Reply-To')).toEqual([]);
    expect(body.toString()).toBe('Hello,\r\n\r\nyour ticket #4711 was updated.\r\n');
  });

  it("sends as a channel without override: the server's account signs in, From and envelope become it, Reply-To keeps the channel", async () => {
    const data = message({ From: '"Sales" <sales@acme.example>', To: 'customer@example.net', Subject: 'Quote' });
    const r = await send({ from: 'sales@acme.example', data });
    expect(r.finalCode).toBe(250);
    const got = await upstream.nextMessage();
    expect(got.login).toBe('relay@acme.example');
    expect(got.mailFrom).toBe('relay@acme.example');
    const parsed = await simpleParser(got.raw);
    expect(parsed.from?.value).toEqual([{ name: 'Sales', address: 'relay@acme.example' }]);
    expect(parsed.replyTo?.value).toEqual([{ name: 'Sales', address: 'sales@acme.example' }]);
  });

  it('sends as an agent with its own account, found by the envelope when From names nobody', async () => {
    const data = message({ From: 'noreply@crm.local', Subject: 'Re: order' });
    const r = await send({ from: 'alice@acme.example', data });
    expect(r.finalCode).toBe(250);
    const got = await upstream.nextMessage();
    expect([got.login, got.mailFrom]).toEqual(['alice@acme.example', 'alice@acme.example']);
    expect(headerValues(split(got.raw).head, 'From')).toEqual(['alice@acme.example']);
    expect(headerValues(split(got.raw).head, 'Reply-To')).toEqual(['noreply@crm.local']);
  });

  it('refuses an unknown sender with 550 5.7.1 naming the address, and relays nothing', async () => {
    const received = countFrom();
    const r = await send({ from: 'someone@elsewhere.example', data: message({ From: 'someone@elsewhere.example', Subject: 'x' }) });
    expect(r.finalCode).toBe(550);
    expect(r.finalReply).toMatch(/^550 5\.7\.1 .*someone@elsewhere\.example/);
    expect(received()).toBe(0);
  });

  it('refuses an agent whose override has no password, saying so', async () => {
    const received = countFrom();
    const r = await send({ from: 'bob@acme.example', data: message({ From: 'bob@acme.example', Subject: 'x' }) });
    expect(r.finalCode).toBe(554);
    expect(r.finalReply).toMatch(/^554 5\.3\.5 agent "bob" \(bob@acme\.example\) has no email password configured/);
    expect(received()).toBe(0);
  });

  it('relays to every envelope recipient in one upstream transaction', async () => {
    const to = ['a@example.net', 'b@example.net', 'c@example.org'];
    const received = countFrom();
    const r = await send({ from: 'support@acme.example', to, data: message({ From: 'support@acme.example', To: 'a@example.net', Subject: 'x' }) });
    expect(r.finalCode).toBe(250);
    const got = await upstream.nextMessage();
    expect(got.rcptTo).toEqual(to);
    expect(received()).toBe(1);
  });

  it('keeps the body byte for byte: 8-bit text, long lines, a binary attachment, lines starting with a dot', async () => {
    const attachment = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256))
      .toString('base64')
      .replace(/(.{76})/g, '$1\r\n');
    const body = Buffer.concat([
      Buffer.from('--sep\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'),
      Buffer.from([0x47, 0x72, 0xfc, 0xdf, 0x65, 0x20, 0xe9, 0xe8, 0x0d, 0x0a]),
      Buffer.from(`${'long line '.repeat(150)}\r\n.a line that starts with a dot\r\n..two dots\r\n`),
      Buffer.from(`--sep\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${attachment}\r\n--sep--\r\n`),
    ]);
    const head = Buffer.from('From: sales@acme.example\r\nSubject: attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=sep\r\n\r\n');
    const r = await send({ from: 'sales@acme.example', data: Buffer.concat([head, body]) });
    expect(r.finalCode).toBe(250);
    const got = await upstream.nextMessage();
    expect(split(got.raw).body.equals(body)).toBe(true);
  });

  it('asks the upstream for BODY=8BITMIME when the client declared it', async () => {
    // swaks 2020 can't send MAIL FROM parameters, so this uses nodemailer's SMTP client
    const client = new SMTPConnection({ host: '127.0.0.1', port: relay.port, ignoreTLS: true });
    await new Promise<void>((resolve, reject) => client.connect((err?: Error) => (err ? reject(err) : resolve())));
    const info = await new Promise<SMTPConnection.SentMessageInfo>((resolve, reject) =>
      client.send({ from: 'support@acme.example', to: ['c@example.net'], use8BitMime: true } as SMTPConnection.Envelope, Buffer.from('From: support@acme.example\r\nSubject: 8bit\r\n\r\nGr\xfc\xdfe\r\n', 'latin1'), (err, i) => (err ? reject(err) : resolve(i))),
    );
    client.quit();
    expect(info.response).toMatch(/^250 2\.0\.0 Relayed/);
    const got = await upstream.nextMessage();
    expect(got.mailFromArgs.BODY).toBe('8BITMIME');
    expect(split(got.raw).body.equals(Buffer.from('Gr\xfc\xdfe\r\n', 'latin1'))).toBe(true);
  });

  it('adds a Received header, and Message-ID and Date only where missing', async () => {
    await send({ from: 'support@acme.example', data: message({ From: 'support@acme.example', Subject: 'bare' }) });
    const bare = split((await upstream.nextMessage()).raw).head;
    expect(bare.startsWith('Received: from ')).toBe(true);
    expect(headerValues(bare, 'Received')[0]).toMatch(/by relay\.test \(sendas\) with ESMTP id [A-Z2-9]{12} for <customer@example\.net>;/);
    expect(headerValues(bare, 'Message-ID')).toHaveLength(1);
    expect(headerValues(bare, 'Date')).toHaveLength(1);

    await send({ from: 'support@acme.example', data: message({ From: 'support@acme.example', 'Message-ID': '<t-1@crm.local>', Date: 'Fri, 20 Nov 2026 10:00:00 +0100', Subject: 'full' }) });
    const full = split((await upstream.nextMessage()).raw).head;
    expect(headerValues(full, 'Message-ID')).toEqual(['<t-1@crm.local>']);
    expect(headerValues(full, 'Date')).toEqual(['Fri, 20 Nov 2026 10:00:00 +0100']);
  });

  it('keeps a null envelope sender null', async () => {
    const r = await send({ from: '', data: message({ From: 'support@acme.example', Subject: 'Delivery report' }) });
    expect(r.finalCode).toBe(250);
    const got = await upstream.nextMessage();
    expect(got.mailFrom).toBe('');
    expect(got.login).toBe('support@acme.example');
  });

  it('refuses a From with several addresses with a clear reply', async () => {
    const r = await send({ from: 'support@acme.example', data: message({ From: 'support@acme.example, sales@acme.example', Subject: 'x' }) });
    expect(r.finalCode).toBe(550);
    expect(r.finalReply).toMatch(/^550 5\.6\.0 The From header lists 2 addresses/);
  });

  it('reuses the upstream connection of an account across messages', async () => {
    const before = upstream.connections;
    for (let i = 0; i < 3; i++) {
      const r = await send({ from: 'alice@acme.example', data: message({ From: 'alice@acme.example', Subject: `n${i}` }) });
      expect(r.finalCode).toBe(250);
      expect(headerValues(split((await upstream.nextMessage()).raw).head, 'Subject')).toEqual([`n${i}`]);
    }
    // the first message of this test may open the alice pool; the next two reuse it
    expect(upstream.connections - before).toBeLessThanOrEqual(1);
  });

  // a small message is read whole before it goes upstream (through the upstream thread), a large one streams
  it.each([
    ['small', 20],
    ['large', 20_000],
  ])('abandons the upstream transaction when the client disconnects mid-message (%s): nothing truncated is delivered', async (_size, bodyLines) => {
    const received = countFrom();
    const mark = relay.logs.length;
    const socket = connect(relay.port, '127.0.0.1');
    const lines = createInterface({ input: socket });
    const replies: string[] = [];
    let waiting: ((l: string) => void) | undefined;
    lines.on('line', (l) => {
      if (/^\d{3} /.test(l)) {
        if (waiting) {
          const w = waiting;
          waiting = undefined;
          w(l);
        } else replies.push(l);
      }
    });
    const reply = () => (replies.length ? Promise.resolve(replies.shift()!) : new Promise<string>((r) => (waiting = r)));
    expect(await reply()).toMatch(/^220 /);
    for (const [cmd, code] of [['EHLO crm.local', '250'], ['MAIL FROM:<support@acme.example>', '250'], ['RCPT TO:<c@example.net>', '250'], ['DATA', '354']] as const) {
      socket.write(`${cmd}\r\n`);
      expect((await reply()).slice(0, 3)).toBe(code);
    }
    socket.write(`From: support@acme.example\r\nSubject: cut\r\n\r\n${'partial body line\r\n'.repeat(bodyLines)}`);
    // the relay has started relaying (it resolved the identity) before the client goes away
    await relay.waitForLog((l) => l.msg === 'upstream transaction started', { after: mark });
    socket.destroy();
    const line = await relay.waitForLog((l) => l.result === 'refused' && l.kind === 'client', { after: mark });
    expect(line.reason).toMatch(/client disconnected/);
    // the next message on the same account still goes through, and only it arrives
    const r = await send({ from: 'support@acme.example', data: message({ From: 'support@acme.example', Subject: 'after' }) });
    expect(r.finalCode).toBe(250);
    expect(headerValues(split((await upstream.nextMessage()).raw).head, 'Subject')).toEqual(['after']);
    expect(received()).toBe(1);
  });

  it('logs one line per message with identity, server, upstream login and From before → after', async () => {
    await send({ from: 'sales@acme.example', data: message({ From: 'sales@acme.example', Subject: 'log me' }) });
    await upstream.nextMessage();
    const line = relay.logs.filter((l) => l.result === 'relayed').at(-1)!;
    expect(line).toMatchObject({
      identity: 'channel:sales',
      server: 'main',
      upstreamLogin: 'relay@acme.example',
      fromBefore: 'sales@acme.example',
      fromAfter: 'relay@acme.example',
      recipients: 1,
    });
    expect(typeof line.id).toBe('string');
    expect(typeof line.durationMs).toBe('number');
  });
});

describe('listener', () => {
  let upstream: TestUpstream;
  let relay: RunningRelay;

  beforeAll(async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS });
    // 127.0.0.1 is not in allow: this relay only relays for clients that log in, which it lets do so without TLS
    relay = await startRelay(relayYaml(upstream.port, 'listen:\n  allow: ["10.0.0.0/8"]\n  max_message_size: 64KB\n  allow_plaintext_auth: true\n').replace('listen:\n  max_message_size: 2MB\n', ''));
  });
  afterAll(async () => {
    const log = relay.rawLog();
    await relay.stop();
    await upstream.close();
    for (const secret of SECRETS) expect(log).not.toContain(secret);
  });

  const send = (opts: Partial<Parameters<typeof swaks>[0]>) =>
    swaks({ server: '127.0.0.1', port: relay.port, from: 'alice@acme.example', to: 'customer@example.net', data: message({ From: 'alice@acme.example', Subject: 'x' }), ...opts });

  it('advertises SIZE, 8BITMIME, PIPELINING, SMTPUTF8, ENHANCEDSTATUSCODES and AUTH, and no STARTTLS', async () => {
    const r = await send({ extraArgs: ['--quit-after', 'EHLO'] });
    const ehlo = r.transcript;
    expect(ehlo).toMatch(/250[- ]SIZE 65536/);
    for (const ext of ['8BITMIME', 'PIPELINING', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'AUTH PLAIN LOGIN']) expect(ehlo).toContain(ext);
    expect(ehlo).not.toContain('STARTTLS');
  });

  it('refuses relaying with 530 5.7.0 at MAIL FROM for a client neither logged in nor in allow', async () => {
    const before = upstream.messages.length;
    const r = await send({});
    expect(r.finalCode).toBe(530);
    expect(r.finalReply).toMatch(/^530 5\.7\.0 Authentication required/);
    expect(upstream.messages.length).toBe(before);
  });

  it('accepts AUTH PLAIN and AUTH LOGIN without TLS for configured clients where the listener allows it', async () => {
    for (const type of ['PLAIN', 'LOGIN'] as const) {
      const r = await send({ auth: { user: 'crm', password: 'crm-secret-4', type } });
      expect(r.finalCode).toBe(250);
      expect((await upstream.nextMessage()).login).toBe('alice@acme.example');
    }
  });

  it('refuses a wrong client password with 535 5.7.8', async () => {
    const r = await send({ auth: { user: 'crm', password: 'wrong', type: 'LOGIN' } });
    expect(r.finalCode).toBe(535);
    expect(r.finalReply).toMatch(/^535 5\.7\.8 /);
  });

  it('refuses a login sending as an identity outside its send_as with 550 5.7.1', async () => {
    const r = await send({ auth: { user: 'alice-desk', password: 'alice-desk-secret-5' }, from: 'support@acme.example', data: message({ From: 'support@acme.example', Subject: 'x' }) });
    expect(r.finalCode).toBe(550);
    expect(r.finalReply).toMatch(/^550 5\.7\.1 Login alice-desk may not send as channel "support"/);
  });

  it('sends as the one identity a login may use when From and envelope name nobody', async () => {
    const r = await send({ auth: { user: 'alice-desk', password: 'alice-desk-secret-5' }, from: 'noreply@crm.local', data: message({ From: 'Helpdesk <noreply@crm.local>', Subject: 'x' }) });
    expect(r.finalCode).toBe(250);
    const got = await upstream.nextMessage();
    expect([got.login, got.mailFrom]).toEqual(['alice@acme.example', 'alice@acme.example']);
    expect(headerValues(split(got.raw).head, 'From')).toEqual(['Helpdesk <alice@acme.example>']);
  });

  it('refuses a message over max_message_size with 552 and relays nothing of it', async () => {
    const big = message({ From: 'alice@acme.example', Subject: 'big' }, `${'y'.repeat(998)}\r\n`.repeat(200));
    const before = upstream.messages.length;
    const r = await send({ auth: { user: 'crm', password: 'crm-secret-4' }, data: big });
    expect(r.finalCode).toBe(552);
    expect(r.finalReply).toMatch(/^552 5\.3\.4 /);
    // the relay is still fine for the next message, and the upstream never completed the big one
    const next = await send({ auth: { user: 'crm', password: 'crm-secret-4' } });
    expect(next.finalCode).toBe(250);
    await upstream.nextMessage();
    expect(upstream.messages.length - before).toBe(1);
    expect(upstream.messages.at(-1)!.raw.length).toBeLessThan(10_000);
  });
});

describe('policy variants', () => {
  let upstream: TestUpstream;
  afterEach(async () => {
    await upstream?.close();
  });

  it('policy.from: reject refuses a From that would change, naming the required address', async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS });
    const relay = await startRelay(relayYaml(upstream.port, 'policy:\n  from: reject\n'));
    try {
      const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'sales@acme.example', to: 'c@example.net', data: message({ From: 'sales@acme.example', Subject: 'x' }) });
      expect(r.finalCode).toBe(550);
      expect(r.finalReply).toMatch(/^550 5\.7\.1 From sales@acme\.example is not allowed: .* must have From: relay@acme\.example/);
      const ok = await swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to: 'c@example.net', data: message({ From: 'support@acme.example', Subject: 'x' }) });
      expect(ok.finalCode).toBe(250);
      expect(headerValues(split((await upstream.nextMessage()).raw).head, 'From')).toEqual(['support@acme.example']);
    } finally {
      await relay.stop();
    }
  });

  it("policy.unknown_sender: default sends an unknown sender with the default server's account", async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true });
    const relay = await startRelay(relayYaml(upstream.port, 'policy:\n  unknown_sender: default\n'));
    try {
      const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'noreply@crm.local', to: 'c@example.net', data: message({ From: 'CRM <noreply@crm.local>', Subject: 'x' }) });
      expect(r.finalCode).toBe(250);
      const got = await upstream.nextMessage();
      expect([got.login, got.mailFrom]).toEqual(['relay@acme.example', 'relay@acme.example']);
      const parsed = await simpleParser(got.raw);
      expect(parsed.from?.value).toEqual([{ name: 'CRM', address: 'relay@acme.example' }]);
      expect(parsed.replyTo?.value).toEqual([{ name: 'CRM', address: 'noreply@crm.local' }]);
    } finally {
      await relay.stop();
    }
  });
});
