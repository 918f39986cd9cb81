import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { applyHeaders, parseSwaksTranscript, swaks, toSwaksDataFile } from './swaks.js';
import { startTestUpstream, TEST_TLS, type TestUpstream, type TestUpstreamOptions } from './upstream.js';

const ALICE = { username: 'alice@a.example', password: '@alice =secret' }; // '@', '=' and space must survive swaks's option parsing

const started: TestUpstream[] = [];
async function upstream(opts?: TestUpstreamOptions): Promise<TestUpstream> {
  const up = await startTestUpstream(opts);
  started.push(up);
  return up;
}
afterEach(async () => {
  await Promise.all(started.splice(0).map((u) => u.close()));
});

const MESSAGE = Buffer.from(
  'From: Alice <alice@a.example>\r\n' +
    'To: carol@c.example\r\n' +
    'Subject: h\u00e9llo %DATE% \\n\r\n' + // swaks tokens and a literal backslash-n must not be touched
    'X-Folded: a\r\n' +
    '\tb\r\n' +
    '\r\n' +
    '.leading dot\r\n' +
    '.\r\n' +
    'From the body, not an mbox separator\r\n' +
    'h\u00e9llo \u2603 %NEWLINE% %MESSAGEID%\r\n' +
    'trailing spaces   \r\n',
  'utf8',
);

describe('swaks() data encoding helpers', () => {
  it('toSwaksDataFile dot-stuffs, normalizes bare LF, terminates', () => {
    expect(toSwaksDataFile(Buffer.from('a\r\n.b\r\n')).toString()).toBe('a\r\n..b\r\n.');
    expect(toSwaksDataFile(Buffer.from('.a\nb\rc')).toString()).toBe('..a\r\nb\rc\r\n.');
    expect(toSwaksDataFile(Buffer.from('a\n.b\r\n'), false).toString()).toBe('a\n..b\r\n.');
    expect(toSwaksDataFile(Buffer.from('a\n'), false).toString()).toBe('a\n\r\n.');
    expect(toSwaksDataFile(Buffer.alloc(0)).toString()).toBe('\r\n.');
  });

  it('applyHeaders replaces (with continuation lines) or appends at the end of the header block', () => {
    const msg = Buffer.from('A: 1\r\nB: 2\r\n  cont\r\nC: 3\r\n\r\nB: body\r\n');
    expect(applyHeaders(msg, { b: 'new', 'X-Y': 'z' }).toString()).toBe('A: 1\r\nb: new\r\nC: 3\r\nX-Y: z\r\n\r\nB: body\r\n');
    expect(applyHeaders(Buffer.from('A: 1\n\nbody\n'), { Z: '\u00fc' }).equals(Buffer.from('A: 1\nZ: \u00fc\n\nbody\n'))).toBe(true);
    expect(applyHeaders(Buffer.from('A: 1'), { Z: 'z' }).toString()).toBe('A: 1\r\nZ: z\r\n');
    expect(() => applyHeaders(msg, { 'Bad Name': 'x' })).toThrow(/invalid header name/);
  });

  it('parseSwaksTranscript pairs pipelined commands with replies, and the end of DATA with "."', () => {
    const t = [
      '=== Trying 127.0.0.1:25...',
      '<-  220 hi',
      ' -> EHLO me',
      '<-  250-x',
      '<-  250 PIPELINING',
      ' -> MAIL FROM:<a@b>',
      ' -> RCPT TO:<c@d>',
      ' -> DATA',
      '<-  250 ok',
      '<** 550 5.1.1 no',
      '<** 554 no valid recipients',
      ' -> QUIT',
      '<-  221 bye',
    ].join('\n');
    const r = parseSwaksTranscript(t);
    expect(r.map((x) => [x.command, x.code])).toEqual([
      ['(greeting)', 220],
      ['EHLO me', 250],
      ['MAIL FROM:<a@b>', 250],
      ['RCPT TO:<c@d>', 550],
      ['DATA', 554],
      ['QUIT', 221],
    ]);
    expect(r[1]!.text).toBe('x\nPIPELINING');
    expect(r[3]!.error).toBe(true);

    const d = parseSwaksTranscript(
      ['<~  354 go', ' ~> 12 lines sent', '<~* 451 4.3.0 later', ' ~> QUIT', '<~  221 bye'].join('\n'),
    );
    expect(d.map((x) => [x.command, x.code, x.error])).toEqual([
      ['(greeting)', 354, false],
      ['.', 451, true],
      ['QUIT', 221, false],
    ]);
  });
});

describe('swaks() against the test upstream', () => {
  it('delivers the message bytes exactly (no swaks data fix-up), with AUTH PLAIN', async () => {
    const up = await upstream({ accounts: [ALICE] });
    const r = await swaks({
      server: up.host,
      port: up.port,
      from: 'alice@a.example',
      to: 'carol@c.example',
      auth: { user: ALICE.username, password: ALICE.password },
      data: MESSAGE,
    });
    expect(r.exitCode).toBe(0);
    expect(r.timedOut).toBe(false);
    expect(r.finalCode).toBe(250);
    expect(r.finalReply).toMatch(/^250 2\.0\.0 OK queued as [0-9a-f]+$/);
    expect(r.transcript).toContain(' -> AUTH PLAIN ');
    expect(r.replies.find((x) => x.command.startsWith('AUTH'))?.code).toBe(235);
    expect(r.replies.at(-1)).toMatchObject({ command: 'QUIT', code: 221 });
    const got = await up.nextMessage();
    expect(got.login).toBe(ALICE.username);
    expect(got.mailFrom).toBe('alice@a.example');
    expect(got.rcptTo).toEqual(['carol@c.example']);
    expect(got.raw.toString('utf8')).toBe(MESSAGE.toString('utf8'));
    expect(got.raw.equals(MESSAGE)).toBe(true);
  });

  it('AUTH LOGIN; wrong password gives finalCode 535 and exit 28', async () => {
    const up = await upstream({ accounts: [ALICE] });
    const ok = await swaks({ server: up.host, port: up.port, from: 'alice@a.example', to: 'c@c.example', auth: { user: ALICE.username, password: ALICE.password, type: 'LOGIN' }, data: MESSAGE });
    expect(ok.finalCode).toBe(250);
    expect(ok.transcript).toContain(' -> AUTH LOGIN');
    const bad = await swaks({ server: up.host, port: up.port, from: 'alice@a.example', to: 'c@c.example', auth: { user: ALICE.username, password: 'nope' }, data: MESSAGE });
    expect(bad.exitCode).toBe(28);
    expect(bad.finalCode).toBe(535);
    expect(bad.finalReply).toBe('535 5.7.8 Authentication credentials invalid');
    expect(up.authAttempts).toEqual([
      { username: ALICE.username, ok: true },
      { username: ALICE.username, ok: false },
    ]);
  });

  it('normalizes bare LF to CRLF by default; normalizeLineEndings:false sends bytes as given', async () => {
    const up = await upstream();
    await swaks({ server: up.host, port: up.port, from: 'a@a.example', to: 'c@c.example', data: 'Subject: lf\n\nline\nbare\rcr\nlast' });
    expect((await up.nextMessage()).raw.toString()).toBe('Subject: lf\r\n\r\nline\r\nbare\rcr\r\nlast\r\n');
    await swaks({ server: up.host, port: up.port, from: 'a@a.example', to: 'c@c.example', data: 'Subject: lf\n\nline\nmixed\r\n', normalizeLineEndings: false });
    expect((await up.nextMessage()).raw.toString()).toBe('Subject: lf\n\nline\nmixed\r\n');
  });

  it('sets headers on the given message', async () => {
    const up = await upstream();
    await swaks({ server: up.host, port: up.port, from: 'a@a.example', to: 'c@c.example', data: 'Subject: old\r\nX-Keep: 1\r\n\r\nbody\r\n', headers: { Subject: 'new', 'X-Added': 'yes' } });
    expect((await up.nextMessage()).raw.toString()).toBe('Subject: new\r\nX-Keep: 1\r\nX-Added: yes\r\n\r\nbody\r\n');
  });

  it('without data sends swaks\'s default test message (with headers), null sender, several recipients, EHLO name, pipelining', async () => {
    const up = await upstream();
    const r = await swaks({ server: up.host, port: up.port, from: '', to: ['c@c.example', 'd@d.example'], headers: { 'X-Test': 'default' }, ehlo: 'client.test', pipeline: true });
    expect(r.finalCode).toBe(250);
    expect(r.transcript).toContain(' -> EHLO client.test');
    const got = await up.nextMessage();
    expect(got.mailFrom).toBe('');
    expect(got.rcptTo).toEqual(['c@c.example', 'd@d.example']);
    expect(got.raw.toString()).toMatch(/^Date: .*\r\nTo: c@c\.example,d@d\.example\r\n/);
    expect(got.raw.toString()).toContain('\r\nX-Test: default\r\n');
  });

  it('partly refused recipients: finalCode is the end-of-DATA reply; all refused: the first failure, exit 24', async () => {
    const up = await upstream({ refuseRecipients: { 'gone@c.example': { code: 550, message: '5.1.1 No such user' } } });
    const r = await swaks({ server: up.host, port: up.port, from: 'a@a.example', to: ['gone@c.example', 'c@c.example'], data: MESSAGE, pipeline: true });
    expect(r.exitCode).toBe(0);
    expect(r.finalCode).toBe(250);
    expect(r.replies.find((x) => x.command === 'RCPT TO:<gone@c.example>')).toMatchObject({ code: 550, text: '5.1.1 No such user', error: true });
    expect(r.transcript).toContain('<** 550 5.1.1 No such user');
    expect((await up.nextMessage()).rcptTo).toEqual(['c@c.example']);

    const all = await swaks({ server: up.host, port: up.port, from: 'a@a.example', to: 'gone@c.example', data: MESSAGE });
    expect(all.exitCode).toBe(24);
    expect(all.finalCode).toBe(550);
    expect(all.finalReply).toBe('550 5.1.1 No such user');
  });

  it('reports MAIL FROM refusals (SendAs denied) and DATA overrides', async () => {
    const up = await upstream({
      accounts: [ALICE],
      requireSenderMatchesLogin: true,
      onData: (m) => (m.rcptTo.includes('later@c.example') ? { code: 451, message: '4.3.0 Greylisted, come back later' } : undefined),
    });
    const auth = { user: ALICE.username, password: ALICE.password };
    const denied = await swaks({ server: up.host, port: up.port, from: 'bob@a.example', to: 'c@c.example', auth, data: MESSAGE });
    expect(denied.exitCode).toBe(23);
    expect(denied.finalCode).toBe(550);
    expect(denied.finalReply).toMatch(/^550 5\.7\.60 .*SendAsDenied/);

    const later = await swaks({ server: up.host, port: up.port, from: 'alice@a.example', to: 'later@c.example', auth, data: MESSAGE });
    expect(later.exitCode).toBe(26);
    expect(later.finalCode).toBe(451);
    expect(later.finalReply).toBe('451 4.3.0 Greylisted, come back later');
    expect(up.rejected).toHaveLength(1);
    expect(up.messages).toHaveLength(0);
  });

  it('STARTTLS and implicit TLS, verifying the test CA', async () => {
    const starttls = await upstream({ security: 'starttls', accounts: [ALICE], requireTlsForAuth: true });
    const r = await swaks({ server: starttls.host, port: starttls.port, from: 'alice@a.example', to: 'c@c.example', auth: { user: ALICE.username, password: ALICE.password }, data: MESSAGE, tls: 'starttls', tlsCaPath: TEST_TLS.caPath });
    expect(r.finalCode).toBe(250);
    expect(r.transcript).toContain(' ~> AUTH PLAIN');
    const got = await starttls.nextMessage();
    expect(got.secure).toBe(true);
    expect(got.raw.equals(MESSAGE)).toBe(true);

    const implicit = await upstream({ security: 'tls' });
    const r2 = await swaks({ server: implicit.host, port: implicit.port, from: 'a@a.example', to: 'c@c.example', data: MESSAGE, tls: 'tls', tlsCaPath: TEST_TLS.caPath });
    expect(r2.finalCode).toBe(250);
    expect((await implicit.nextMessage()).secure).toBe(true);
  });

  it('dataFile: streams a large message file, summarizes DATA in the transcript, bytes exact', async () => {
    const up = await upstream();
    const dir = await mkdtemp(join(tmpdir(), 'swaks-test-'));
    try {
      const line = '.' + 'y'.repeat(76) + '\r\n';
      const body = Buffer.from('Subject: big\r\n\r\n' + line.repeat(40_000), 'ascii'); // ~3 MB
      const file = join(dir, 'big.eml');
      await writeFile(file, body);
      const r = await swaks({ server: up.host, port: up.port, from: 'a@a.example', to: 'c@c.example', dataFile: file, timeoutMs: 30_000 });
      expect(r.finalCode).toBe(250);
      expect(r.transcript).toMatch(/ -> \d+ lines sent/);
      expect(r.transcript.length).toBeLessThan(10_000);
      expect((await up.nextMessage()).raw.equals(body)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a silent server: swaks reports its reply timeout; past timeoutMs the wrapper kills swaks', async () => {
    const silent = net.createServer((s) => s.on('error', () => undefined));
    const sockets = new Set<net.Socket>();
    silent.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const own = await swaks({ server: '127.0.0.1', port, to: 'c@c.example', replyTimeoutSec: 1, timeoutMs: 10_000 });
      expect(own.timedOut).toBe(false);
      expect(own.exitCode).toBe(21);
      expect(own.finalCode).toBeNull();
      expect(own.transcript).toContain('Timeout (1 secs) waiting for server response');

      const t0 = Date.now();
      const killed = await swaks({ server: '127.0.0.1', port, to: 'c@c.example', replyTimeoutSec: 30, timeoutMs: 700 });
      expect(killed.timedOut).toBe(true);
      expect(killed.exitCode).toBe(124);
      expect(Date.now() - t0).toBeLessThan(5_000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('rejects values swaks would prompt for instead of hanging', async () => {
    await expect(swaks({ server: '127.0.0.1', port: 25, to: [] })).rejects.toThrow(/recipient/);
    await expect(swaks({ server: '127.0.0.1', port: 25, to: 'c@c.example', auth: { user: 'u', password: '' } })).rejects.toThrow(/auth\.password/);
    await expect(swaks({ server: '127.0.0.1', port: 0, to: 'c@c.example' })).rejects.toThrow(/port/);
    await expect(swaks({ server: '127.0.0.1', port: 25, to: 'c@c.example', auth: { user: 'u', password: '-x' } })).rejects.toThrow(/cannot start with '-'/);
    await expect(swaks({ server: '127.0.0.1', port: 25, to: 'c@c.example', data: 'x', dataFile: '/nonexistent' })).rejects.toThrow(/not both/);
  });
});
