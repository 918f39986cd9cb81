import { PassThrough } from 'node:stream';
import net from 'node:net';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestUpstream, testCa, type TestUpstream, type TestUpstreamOptions } from './upstream.js';

const ALICE = { username: 'alice@a.example', password: 'alice-secret' };
const BOB = { username: 'bob@b.example', password: 'bob-secret' };

const started: TestUpstream[] = [];
async function upstream(opts?: TestUpstreamOptions): Promise<TestUpstream> {
  const up = await startTestUpstream(opts);
  started.push(up);
  return up;
}
afterEach(async () => {
  await Promise.all(started.splice(0).map((u) => u.close()));
});

type Auth = { user: string; pass: string };
function transport(up: TestUpstream, extra: { auth?: Auth; authMethod?: string; secure?: boolean; requireTLS?: boolean; pool?: boolean } = {}) {
  return nodemailer.createTransport({
    host: up.host,
    port: up.port,
    secure: extra.secure ?? false,
    requireTLS: extra.requireTLS ?? false,
    ignoreTLS: !(extra.secure || extra.requireTLS),
    auth: extra.auth,
    authMethod: extra.authMethod,
    tls: { ca: [testCa()], servername: 'localhost' },
    connectionTimeout: 5_000,
    greetingTimeout: 5_000,
    socketTimeout: 5_000,
  });
}

interface RawReply {
  code: number;
  text: string;
  lines: string[];
}
/** A minimal line-based SMTP client over a plain socket, for checks nodemailer does not expose. */
async function rawClient(up: TestUpstream): Promise<{ greeting: Promise<RawReply>; cmd(line: string): Promise<RawReply> }> {
  const sock = net.connect(up.port, up.host);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.setEncoding('utf8');
  let buf = '';
  let cur: string[] = [];
  const replies: RawReply[] = [];
  const waiting: ((r: RawReply) => void)[] = [];
  sock.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\r\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      cur.push(line.slice(4));
      if (line[3] !== '-') {
        const r = { code: Number(line.slice(0, 3)), text: cur.join('\n'), lines: cur };
        cur = [];
        const w = waiting.shift();
        if (w) w(r);
        else replies.push(r);
      }
    }
  });
  sock.on('error', () => undefined);
  const next = (): Promise<RawReply> => {
    const r = replies.shift();
    return r ? Promise.resolve(r) : new Promise<RawReply>((resolve) => waiting.push(resolve));
  };
  return {
    greeting: next(),
    cmd(line: string) {
      sock.write(line + '\r\n');
      return next();
    },
  };
}

/** what SMTP replies look like as errors from nodemailer */
function smtpErr(e: unknown): { responseCode?: number; response?: string } {
  return e as { responseCode?: number; response?: string };
}

const RAW = Buffer.from(
  'From: Alice <alice@a.example>\r\n' +
    'To: carol@c.example\r\n' +
    'Subject: =?UTF-8?Q?h=C3=A9llo?=\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    'Content-Transfer-Encoding: 8bit\r\n' +
    '\r\n' +
    '.leading dot line\r\n' +
    'h\u00e9llo w\u00f6rld \u2603\r\n' +
    '..two dots\r\n' +
    'trailing spaces   \r\n',
  'utf8',
);

describe('startTestUpstream', () => {
  it('listens on a free loopback port and accepts mail without AUTH, recording envelope and exact bytes', async () => {
    const up = await upstream();
    expect(up.host).toBe('127.0.0.1');
    expect(up.port).toBeGreaterThan(0);
    const t = transport(up);
    const info = await t.sendMail({ envelope: { from: 'alice@a.example', to: ['carol@c.example', 'dave@d.example'] }, raw: RAW });
    expect(info.response).toMatch(/^250 2\.0\.0 /);
    const msg = await up.nextMessage();
    expect(msg.login).toBeNull();
    expect(msg.mailFrom).toBe('alice@a.example');
    expect(msg.rcptTo).toEqual(['carol@c.example', 'dave@d.example']);
    expect(msg.raw.equals(RAW)).toBe(true);
    expect(typeof msg.remotePort).toBe('number');
    expect(msg.secure).toBe(false);
    expect(up.messages).toHaveLength(1);
    expect(up.connections).toBe(1);
    t.close();
  });

  it('does not offer AUTH nor STARTTLS without accounts; records MAIL FROM parameters', async () => {
    const up = await upstream();
    const c = await rawClient(up);
    expect((await c.greeting).code).toBe(220);
    const ehlo = await c.cmd('EHLO client.test');
    expect(ehlo.code).toBe(250);
    expect(ehlo.lines).toEqual(expect.arrayContaining(['PIPELINING', '8BITMIME', 'SMTPUTF8', 'SIZE 104857600']));
    expect(ehlo.lines.some((l) => /^AUTH|^STARTTLS/.test(l))).toBe(false);
    expect((await c.cmd('AUTH PLAIN AGFAYgB4')).code).toBeGreaterThanOrEqual(500);
    expect((await c.cmd('MAIL FROM:<s\u00e9nder@a.example> BODY=8BITMIME SMTPUTF8 SIZE=42')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<carol@c.example>')).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    expect((await c.cmd('Subject: x\r\n\r\n..dot-stuffed\r\n.')).text).toMatch(/^2\.0\.0 OK queued as /);
    await c.cmd('QUIT');
    const msg = await up.nextMessage();
    expect(msg.mailFrom).toBe('s\u00e9nder@a.example');
    expect(msg.mailFromArgs).toEqual({ BODY: '8BITMIME', SMTPUTF8: 'true', SIZE: '42' });
    expect(msg.raw.toString()).toBe('Subject: x\r\n\r\n.dot-stuffed\r\n');
    expect(up.authAttempts).toEqual([]);
  });

  it('advertises AUTH PLAIN LOGIN CRAM-MD5 with accounts, STARTTLS only with security starttls', async () => {
    const up = await upstream({ accounts: [ALICE], security: 'starttls' });
    const c = await rawClient(up);
    await c.greeting;
    const ehlo = await c.cmd('EHLO client.test');
    expect(ehlo.lines).toEqual(expect.arrayContaining(['STARTTLS', 'AUTH PLAIN LOGIN CRAM-MD5']));
    await c.cmd('QUIT');
  });

  it.each(['PLAIN', 'LOGIN', 'CRAM-MD5'])('authenticates with %s and records the login', async (method) => {
    const up = await upstream({ accounts: [ALICE, BOB] });
    const t = transport(up, { auth: { user: BOB.username, pass: BOB.password }, authMethod: method });
    await t.sendMail({ envelope: { from: 'bob@b.example', to: 'carol@c.example' }, raw: RAW });
    const msg = await up.nextMessage();
    expect(msg.login).toBe(BOB.username);
    expect(up.authAttempts).toEqual([{ username: BOB.username, ok: true }]);
    t.close();
  });

  it.each(['PLAIN', 'LOGIN', 'CRAM-MD5'])('refuses a wrong password with 535 (%s)', async (method) => {
    const up = await upstream({ accounts: [ALICE, BOB] });
    // alice's username with bob's password: each user must present exactly its own password
    const t = transport(up, { auth: { user: ALICE.username, pass: BOB.password }, authMethod: method });
    const err = await t.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW }).catch((e: unknown) => e);
    expect(smtpErr(err).responseCode).toBe(535);
    expect(smtpErr(err).response).toMatch(/^535 5\.7\.8 /);
    expect(up.authAttempts).toEqual([{ username: ALICE.username, ok: false }]);
    expect(up.messages).toHaveLength(0);
    t.close();
  });

  it('requires AUTH when accounts are configured', async () => {
    const up = await upstream({ accounts: [ALICE] });
    const t = transport(up);
    const err = await t.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW }).catch((e: unknown) => e);
    expect(smtpErr(err).responseCode).toBe(530);
    t.close();
  });

  it('refuses configured recipients at RCPT and delivers to the others', async () => {
    const up = await upstream({ refuseRecipients: { 'Nobody@X.example': { code: 550, message: '5.1.1 No such user' } } });
    const t = transport(up);
    const info = await t.sendMail({ envelope: { from: 'alice@a.example', to: ['nobody@x.example', 'carol@c.example'] }, raw: RAW });
    expect(info.accepted).toEqual(['carol@c.example']);
    expect(info.rejected).toEqual(['nobody@x.example']);
    expect(info.rejectedErrors?.[0]?.response).toBe('550 5.1.1 No such user');
    const msg = await up.nextMessage();
    expect(msg.rcptTo).toEqual(['carol@c.example']);

    const err = await t.sendMail({ envelope: { from: 'alice@a.example', to: ['nobody@x.example'] }, raw: RAW }).catch((e: unknown) => e);
    expect(smtpErr(err).responseCode).toBe(550);
    expect(up.messages).toHaveLength(1);
    t.close();
  });

  it('refuses senders via refuseSenders at MAIL FROM', async () => {
    const up = await upstream({
      accounts: [ALICE],
      refuseSenders: (from, login) => (from.endsWith('@evil.example') ? { code: 553, message: `5.7.1 ${login} may not use ${from}` } : undefined),
    });
    const t = transport(up, { auth: { user: ALICE.username, pass: ALICE.password } });
    const err = await t.sendMail({ envelope: { from: 'x@evil.example', to: 'carol@c.example' }, raw: RAW }).catch((e: unknown) => e);
    expect(smtpErr(err).response).toBe('553 5.7.1 alice@a.example may not use x@evil.example');
    await t.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW });
    expect((await up.nextMessage()).mailFrom).toBe('alice@a.example');
    t.close();
  });

  it('requireSenderMatchesLogin: refuses MAIL FROM other than the login with 550 5.7.60 (case-insensitive match), allows <>', async () => {
    const up = await upstream({ accounts: [ALICE], requireSenderMatchesLogin: true });
    const t = transport(up, { auth: { user: ALICE.username, pass: ALICE.password } });
    const err = await t.sendMail({ envelope: { from: 'bob@b.example', to: 'carol@c.example' }, raw: RAW }).catch((e: unknown) => e);
    expect(smtpErr(err).responseCode).toBe(550);
    expect(smtpErr(err).response).toMatch(/^550 5\.7\.60 .*SendAsDenied/);
    await t.sendMail({ envelope: { from: 'ALICE@a.example', to: 'carol@c.example' }, raw: RAW });
    expect((await up.nextMessage()).mailFrom).toBe('ALICE@a.example');
    // the null sender (bounces, receipts) is not a SendAs question
    await t.sendMail({ envelope: { from: '', to: 'carol@c.example' }, raw: RAW });
    expect((await up.nextMessage()).mailFrom).toBe('');
    t.close();
  });

  it('onData can override the reply after DATA (temporary failure), message kept out of messages', async () => {
    let calls = 0;
    const up = await upstream({ onData: () => (++calls === 1 ? { code: 451, message: '4.3.0 Temporary failure, try again' } : undefined) });
    const t = transport(up);
    const err = await t.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW }).catch((e: unknown) => e);
    expect(smtpErr(err).response).toBe('451 4.3.0 Temporary failure, try again');
    expect(up.messages).toHaveLength(0);
    expect(up.rejected).toHaveLength(1);
    expect(up.rejected[0]!.msg.raw.equals(RAW)).toBe(true);
    await t.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW });
    expect(up.messages).toHaveLength(1);
    t.close();
  });

  it('nextMessage: resolves on arrival in order, consumes each message once, times out', async () => {
    const up = await upstream();
    const first = up.nextMessage(5_000);
    const second = up.nextMessage(5_000);
    const t = transport(up);
    await t.sendMail({ envelope: { from: 'one@a.example', to: 'carol@c.example' }, raw: RAW });
    await t.sendMail({ envelope: { from: 'two@a.example', to: 'carol@c.example' }, raw: RAW });
    expect((await first).mailFrom).toBe('one@a.example');
    expect((await second).mailFrom).toBe('two@a.example');
    await t.sendMail({ envelope: { from: 'three@a.example', to: 'carol@c.example' }, raw: RAW });
    expect((await up.nextMessage()).mailFrom).toBe('three@a.example');
    const t0 = Date.now();
    await expect(up.nextMessage(150)).rejects.toThrow(/no message within 150 ms/);
    expect(Date.now() - t0).toBeLessThan(2_000);
    t.close();
  });

  it('counts TCP connections (a pooled client reuses one)', async () => {
    const up = await upstream();
    const pool = nodemailer.createTransport({ host: up.host, port: up.port, pool: true, maxConnections: 1, ignoreTLS: true });
    for (let i = 0; i < 3; i++) await pool.sendMail({ envelope: { from: 'a@a.example', to: 'carol@c.example' }, raw: RAW });
    expect(up.messages).toHaveLength(3);
    expect(up.connections).toBe(1);
    pool.close();
    const t = transport(up);
    await t.sendMail({ envelope: { from: 'a@a.example', to: 'carol@c.example' }, raw: RAW });
    expect(up.connections).toBe(2);
    t.close();
  });

  it('STARTTLS with the test CA; login and bytes recorded over TLS', async () => {
    const up = await upstream({ security: 'starttls', accounts: [ALICE], requireTlsForAuth: true });
    const t = transport(up, { auth: { user: ALICE.username, pass: ALICE.password }, requireTLS: true });
    await t.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW });
    const msg = await up.nextMessage();
    expect(msg.secure).toBe(true);
    expect(msg.login).toBe(ALICE.username);
    expect(msg.raw.equals(RAW)).toBe(true);
    t.close();
  });

  it('STARTTLS is verified: a client without the test CA fails', async () => {
    const up = await upstream({ security: 'starttls' });
    const t = nodemailer.createTransport({ host: up.host, port: up.port, requireTLS: true, connectionTimeout: 5_000 });
    await expect(t.sendMail({ envelope: { from: 'a@a.example', to: 'carol@c.example' }, raw: RAW })).rejects.toThrow(/certificate/i);
    expect(up.messages).toHaveLength(0);
    t.close();
  });

  it('requireTlsForAuth refuses AUTH before STARTTLS', async () => {
    const up = await upstream({ security: 'starttls', accounts: [ALICE], requireTlsForAuth: true });
    const t = transport(up, { auth: { user: ALICE.username, pass: ALICE.password } }); // ignoreTLS
    await expect(t.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW })).rejects.toThrow();
    expect(up.authAttempts).toEqual([]);
    t.close();
  });

  it('implicit TLS with the test CA (localhost name)', async () => {
    const up = await upstream({ security: 'tls', accounts: [ALICE] });
    const t = nodemailer.createTransport({
      host: 'localhost',
      port: up.port,
      secure: true,
      auth: { user: ALICE.username, pass: ALICE.password },
      tls: { ca: [testCa()] },
    });
    await t.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW });
    const msg = await up.nextMessage();
    expect(msg.secure).toBe(true);
    expect(msg.raw.equals(RAW)).toBe(true);
    t.close();
  });

  it('close() ends idle client connections promptly and rejects pending nextMessage', async () => {
    const up = await startTestUpstream();
    const sock = net.connect(up.port, up.host);
    const greeting = await new Promise<string>((resolve) => sock.once('data', (d: Buffer) => resolve(d.toString())));
    expect(greeting).toMatch(/^220 /);
    const closedByServer = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    sock.on('error', () => undefined);
    const pending = up.nextMessage(10_000).then(
      () => new Error('resolved unexpectedly'),
      (e: unknown) => e,
    );
    const t0 = Date.now();
    await up.close();
    expect(String(await pending)).toMatch(/closed/);
    await closedByServer;
    expect(Date.now() - t0).toBeLessThan(3_000);
    await up.close(); // idempotent
  });

  it('accepts large messages (SIZE 100 MB advertised)', async () => {
    const up = await upstream();
    const line = 'x'.repeat(998) + '\r\n';
    const big = Buffer.from('Subject: big\r\n\r\n' + line.repeat(6 * 1024), 'ascii'); // ~6 MB
    const t = transport(up);
    await t.sendMail({ envelope: { from: 'a@a.example', to: 'carol@c.example', size: big.length }, raw: big });
    const msg = await up.nextMessage();
    expect(msg.raw.equals(big)).toBe(true);
    t.close();
  });
});

describe('startTestUpstream with xoauth2', () => {
  const GOOD = 'ya29.good-token';
  const validate = (user: string, token: string): boolean => user === ALICE.username && token === GOOD;
  const xoauth2 = (user: string, token: string): string => Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`).toString('base64');

  it('advertises AUTH ... XOAUTH2 (and requires AUTH) only when the option is given', async () => {
    const up = await upstream({ xoauth2: validate });
    const c = await rawClient(up);
    await c.greeting;
    const ehlo = await c.cmd('EHLO client.test');
    expect(ehlo.lines).toContain('AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2');
    expect((await c.cmd('MAIL FROM:<alice@a.example>')).code).toBe(530);
    await c.cmd('QUIT');
  });

  it('accepts a valid token (235) and records the login; a bad one gets the 334 {"status":"401",...} challenge then 535', async () => {
    const up = await upstream({ xoauth2: validate, xoauth2Scope: 'https://outlook.office.com/SMTP.Send' });
    const c = await rawClient(up);
    await c.greeting;
    await c.cmd('EHLO client.test');
    const bad = await c.cmd(`AUTH XOAUTH2 ${xoauth2(ALICE.username, 'expired-token')}`);
    expect(bad.code).toBe(334);
    expect(JSON.parse(Buffer.from(bad.text, 'base64').toString())).toEqual({ status: '401', schemes: 'bearer', scope: 'https://outlook.office.com/SMTP.Send' });
    const after = await c.cmd('');
    expect(after.code).toBe(535);
    // the right token for another user is refused too (the validator decides)
    expect((await c.cmd(`AUTH XOAUTH2 ${xoauth2(BOB.username, GOOD)}`)).code).toBe(334);
    expect((await c.cmd('')).code).toBe(535);
    expect((await c.cmd(`AUTH XOAUTH2 ${xoauth2(ALICE.username, GOOD)}`)).code).toBe(235);
    expect((await c.cmd('MAIL FROM:<alice@a.example>')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<carol@c.example>')).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    expect((await c.cmd('Subject: x\r\n\r\nhi\r\n.')).code).toBe(250);
    await c.cmd('QUIT');
    expect((await up.nextMessage()).login).toBe(ALICE.username);
    expect(up.authAttempts).toEqual([
      { username: ALICE.username, ok: false },
      { username: BOB.username, ok: false },
      { username: ALICE.username, ok: true },
    ]);
    expect(up.xoauth2Attempts).toEqual([
      { username: ALICE.username, accessToken: 'expired-token', ok: false },
      { username: BOB.username, accessToken: GOOD, ok: false },
      { username: ALICE.username, accessToken: GOOD, ok: true },
    ]);
  });

  it('nodemailer OAuth2 (accessToken) signs in; a refused token fails with 535; password accounts work alongside', async () => {
    const up = await upstream({ accounts: [BOB], xoauth2: async (user, token) => validate(user, token) });
    const ok = nodemailer.createTransport({ host: up.host, port: up.port, ignoreTLS: true, auth: { type: 'OAuth2', user: ALICE.username, accessToken: GOOD } });
    await ok.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW });
    expect((await up.nextMessage()).login).toBe(ALICE.username);
    ok.close();

    const bad = nodemailer.createTransport({ host: up.host, port: up.port, ignoreTLS: true, auth: { type: 'OAuth2', user: ALICE.username, accessToken: 'stale' } });
    const err = await bad.sendMail({ envelope: { from: 'alice@a.example', to: 'carol@c.example' }, raw: RAW }).catch((e: unknown) => e);
    expect(smtpErr(err).responseCode).toBe(535);
    bad.close();

    const pw = transport(up, { auth: { user: BOB.username, pass: BOB.password } });
    await pw.sendMail({ envelope: { from: 'bob@b.example', to: 'carol@c.example' }, raw: RAW });
    expect((await up.nextMessage()).login).toBe(BOB.username);
    pw.close();
    // nodemailer retries a refused XOAUTH2 once (asking its token provider for a fresh token)
    expect(up.authAttempts[0]).toEqual({ username: ALICE.username, ok: true });
    expect(up.authAttempts.at(-1)).toEqual({ username: BOB.username, ok: true });
    expect(up.xoauth2Attempts.slice(1).every((a) => a.accessToken === 'stale' && !a.ok)).toBe(true);
    expect(up.messages).toHaveLength(2);
  });
});

describe('startTestUpstream playing Microsoft 365 limits', () => {
  it('maxConcurrentPerLogin: the 4th transaction at once for one login gets 432 4.3.2 STOREDRV.ClientSubmit; another login is not counted', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const up = await upstream({ accounts: [ALICE, BOB], maxConcurrentPerLogin: 3 });
    // three connections each with a transaction still in DATA: the message body is held back until released
    const held = Array.from({ length: 3 }, () => {
      const t = transport(up, { auth: { user: ALICE.username, pass: ALICE.password } });
      const body = new PassThrough();
      const sending = t.sendMail({ envelope: { from: ALICE.username, to: ['x@example.net'] }, raw: body });
      void gate.then(() => body.end('Subject: held\r\n\r\nx\r\n'));
      return sending;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const fourth = await transport(up, { auth: { user: ALICE.username, pass: ALICE.password } })
      .sendMail({ envelope: { from: ALICE.username, to: ['x@example.net'] }, raw: 'Subject: 4\r\n\r\nx\r\n' })
      .catch((e: { responseCode?: number; response?: string }) => e);
    expect(fourth).toMatchObject({ responseCode: 432, response: '432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded' });
    await transport(up, { auth: { user: BOB.username, pass: BOB.password } }).sendMail({ envelope: { from: BOB.username, to: ['x@example.net'] }, raw: 'Subject: bob\r\n\r\nx\r\n' });
    release();
    await Promise.all(held);
    expect(up.peakConcurrent.get(ALICE.username)).toBe(3);
    expect(up.limitRefusals.map((r) => [r.login, r.reply.code])).toEqual([[ALICE.username, 432]]);
    // the transactions are over: there is room again
    await transport(up, { auth: { user: ALICE.username, pass: ALICE.password } }).sendMail({ envelope: { from: ALICE.username, to: ['x@example.net'] }, raw: 'Subject: 5\r\n\r\nx\r\n' });
  });

  it('recipientsPerLogin: a message that would go over gets 554 5.2.0 SubmissionQuotaExceededException after DATA, until the window is reset', async () => {
    const up = await upstream({ accounts: [ALICE], recipientsPerLogin: 3 });
    const t = transport(up, { auth: { user: ALICE.username, pass: ALICE.password } });
    const send = (to: string[]) => t.sendMail({ envelope: { from: ALICE.username, to }, raw: 'Subject: q\r\n\r\nx\r\n' }).catch((e: { responseCode?: number; response?: string }) => e);
    await send(['a@x.example', 'b@x.example']);
    expect(await send(['c@x.example', 'd@x.example'])).toMatchObject({ responseCode: 554, response: expect.stringMatching(/^554 5\.2\.0 STOREDRV\.Submission\.Exception:SubmissionQuotaExceededException/) });
    await send(['c@x.example']);
    expect(up.recipientsUsed.get(ALICE.username)).toBe(3);
    up.resetRecipientWindow();
    await send(['e@x.example', 'f@x.example']);
    expect(up.messages.map((m) => m.rcptTo.length)).toEqual([2, 1, 2]);
    expect(up.rejected).toHaveLength(1);
  });

  it('sessions: signed-in connections per login, idle pooled ones included, until they close; replyDelayMs holds the 250', async () => {
    const up = await upstream({ accounts: [ALICE, BOB], replyDelayMs: (login) => (login === ALICE.username ? 150 : 0) });
    const pool = nodemailer.createTransport({ host: up.host, port: up.port, ignoreTLS: true, pool: true, maxConnections: 2, auth: { user: ALICE.username, pass: ALICE.password } });
    const started = performance.now();
    await Promise.all([1, 2].map((i) => pool.sendMail({ envelope: { from: ALICE.username, to: ['x@example.net'] }, raw: `Subject: ${i}\r\n\r\nx\r\n` })));
    expect(performance.now() - started).toBeGreaterThanOrEqual(150);
    // both pooled connections stay open, idle and signed in
    expect(up.openSessions.get(ALICE.username)).toBe(2);
    await transport(up, { auth: { user: BOB.username, pass: BOB.password } }).sendMail({ envelope: { from: BOB.username, to: ['x@example.net'] }, raw: 'Subject: bob\r\n\r\nx\r\n' });
    pool.close();
    while ((up.openSessions.get(ALICE.username) ?? 0) > 0) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(up.peakSessions.get(ALICE.username)).toBe(2);
    expect(up.peakSessions.get(BOB.username)).toBe(1);
    const alice = up.sessionTimeline.filter((c) => c.login === ALICE.username);
    expect(alice.map((c) => [c.change, c.open])).toEqual([[1, 1], [1, 2], [-1, 1], [-1, 0]]);
    expect(new Set(alice.map((c) => c.remotePort)).size).toBe(2);
    // a connection's first transaction began at its accept, before the sign-in
    for (const m of up.messages.filter((x) => x.login === ALICE.username)) {
      const signedIn = alice.find((c) => c.change === 1 && c.remotePort === m.remotePort)!;
      expect(m.startedAt).toBeLessThan(signedIn.at);
    }
    const bob = up.messages.find((x) => x.login === BOB.username)!;
    expect(bob.startedAt).toBeLessThan(bob.repliedAt!);
  });
});
