import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { rawSmtp, type RawSmtpClient } from '../support/raw-smtp.js';
import { ACCOUNTS, SECRETS, message, relayYaml, startRelay, type RunningRelay } from './harness.js';

/**
 * `limits:` against real clients: raw sockets for what no well-behaved client does (guessing,
 * trickling a line, going silent), swaks and Python's smtplib for the logins that must still work.
 * Limits are short in these configs, so each case takes about a second, not minutes.
 */

type Raw = RawSmtpClient;

const raw = (port: number, localAddress = '127.0.0.1'): Promise<Raw> => rawSmtp(port, { localAddress });

async function greeted(port: number, localAddress?: string): Promise<Raw> {
  const c = await raw(port, localAddress);
  expect((await c.reply()).text).toMatch(/^220 /);
  c.write('EHLO legacy.example');
  expect((await c.reply()).text).toMatch(/^250[ -]/);
  return c;
}

const plain = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString('base64');

/** Python's smtplib from a given source address: log in, send one message; prints the login reply or the exception. */
function pythonSend(port: number, sourceAddress: string, user: string, password: string): Promise<string> {
  const script = `
import smtplib, sys
try:
    s = smtplib.SMTP('127.0.0.1', ${port}, source_address=('${sourceAddress}', 0), timeout=10)
    s.ehlo('py.example')
    code, text = s.login(sys.argv[1], sys.argv[2])
    s.sendmail('crm@crm.local', ['customer@example.net'], b'From: support@acme.example\\r\\nTo: customer@example.net\\r\\nSubject: from python\\r\\n\\r\\nhi\\r\\n')
    s.quit()
    print('ok', code)
except smtplib.SMTPAuthenticationError as e:
    print('auth', e.smtp_code, e.smtp_error.decode())
`;
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', script, user, password], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', () => resolve(out.trim()));
  });
}

/** README's fail2ban failregex, as written there, and as a JS regex with fail2ban's <HOST> as an IPv4/IPv6 group. */
const FAIL2BAN_FAILREGEX = /^failregex = (.*)$/m.exec(readFileSync(new URL('../../README.md', import.meta.url), 'utf8'))![1]!;
const FAIL2BAN_REGEX = new RegExp(FAIL2BAN_FAILREGEX.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace('<HOST>', '([0-9a-fA-F.:]+)'));
const hasFail2banRegex = spawnSync('fail2ban-regex', ['--version']).status === 0;

describe('limits: guessing', () => {
  let upstream: TestUpstream;
  let relay: RunningRelay;

  beforeAll(async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS });
    relay = await startRelay(
      relayYaml(upstream.port, 'limits: {auth: {failures_per_address: 10, failures_per_login: 12, window: 1m, lockout: 1m, delay: 20ms, max_delay: 100ms}}'),
    );
  });
  afterAll(async () => {
    await relay.stop();
    await upstream.close();
    for (const secret of SECRETS) expect(relay.rawLog()).not.toContain(secret);
    expect(relay.rawLog()).not.toContain('wrong-guess');
  });

  it('slows wrong passwords down, then answers 454 from that address even to the right password, while another address logs in', async () => {
    const c = await greeted(relay.port);
    const waits: number[] = [];
    for (let i = 1; i <= 10; i++) {
      const sent = performance.now();
      c.write(`AUTH PLAIN ${plain('crm', `wrong-guess-${i}`)}`);
      const r = await c.reply();
      expect(r.text).toMatch(/^535 5\.7\.8 /);
      waits.push(r.at - sent);
    }
    // 20 ms doubling, capped at 100 ms: the first answers come quickly, the later ones wait the cap
    expect(waits[0]).toBeLessThan(100);
    for (const w of waits.slice(3)) expect(w).toBeGreaterThanOrEqual(95);

    c.write(`AUTH PLAIN ${plain('crm', 'crm-secret-4')}`);
    expect((await c.reply()).text).toMatch(/^454 4\.7\.0 Too many failed logins from this address \(limits\.auth\.failures_per_address\); try again in 1 minute$/);
    c.end();

    const line = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('auth lockout'));
    expect(line).toMatchObject({ scope: 'address', address: '127.0.0.1', login: 'crm', failures: 10, window: '60s', msg: 'auth lockout scope=address address=127.0.0.1 failures=10 window=60s login="crm"' });
    const rawLine = relay.rawLog().split('\n').find((l) => l.includes('auth lockout'))!;
    expect(FAIL2BAN_REGEX.exec(rawLine)?.[1]).toBe('127.0.0.1');
    expect(relay.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('auth lockout'))).toHaveLength(1);

    // a real client from the locked address, right password: still 454
    const locked = await swaks({ server: '127.0.0.1', port: relay.port, auth: { user: 'crm', password: 'crm-secret-4' }, from: 'crm@crm.local', to: 'customer@example.net', data: message({ From: 'support@acme.example', Subject: 'x' }) });
    expect(locked.exitCode).toBe(28);
    expect(locked.finalReply).toMatch(/^454 4\.7\.0 Too many failed logins from this address/);

    // the same login from another address is not affected
    const before = upstream.messages.length;
    expect(await pythonSend(relay.port, '127.0.0.2', 'crm', 'crm-secret-4')).toBe('ok 235');
    expect(upstream.messages.length).toBe(before + 1);

    const metrics = await relay.metrics();
    expect(metrics).toMatch(/^sendas_auth_failures_total 10$/m);
    expect(metrics).toMatch(/^sendas_auth_lockouts_total\{scope="address"\} 1$/m);
    expect(metrics).toMatch(/^sendas_client_limits_total\{limit="auth_lockout"\} 2$/m);
  });

  it.skipIf(!hasFail2banRegex)('gives fail2ban, with the README filter, the locked address and only that', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'sendas-f2b-')), 'sendas.log');
    writeFileSync(file, relay.rawLog());
    const out = spawnSync('fail2ban-regex', ['-v', file, FAIL2BAN_FAILREGEX], { encoding: 'utf8' }).stdout;
    expect(out).toMatch(/^\|\s+127\.0\.0\.1\s/m);
    expect(out).toMatch(/^Lines: \d+ lines, 0 ignored, 1 matched/m);
  });

  it('locks a login guessed at from several addresses, for every address, and leaves other logins alone', async () => {
    for (const from of ['127.0.0.3', '127.0.0.4', '127.0.0.8']) {
      const c = await greeted(relay.port, from);
      for (let i = 0; i < 4; i++) {
        c.write(`AUTH PLAIN ${plain('alice-desk', `wrong-guess-${from}-${i}`)}`);
        expect((await c.reply()).text).toMatch(/^535 /);
      }
      c.end();
    }
    await relay.waitForLog((l) => l.msg === 'auth lockout scope=login address=127.0.0.8 failures=12 window=60s login="alice-desk"');
    expect(await pythonSend(relay.port, '127.0.0.5', 'alice-desk', 'alice-desk-secret-5')).toMatch(/^auth 454 4\.7\.0 Too many failed logins for this login \(limits\.auth\.failures_per_login\)/);
    expect(await pythonSend(relay.port, '127.0.0.5', 'crm', 'crm-secret-4')).toBe('ok 235');
  });
});

describe('limits: flooding and slow clients', () => {
  let upstream: TestUpstream;
  let relay: RunningRelay;

  beforeAll(async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS });
    relay = await startRelay(
      relayYaml(
        upstream.port,
        'limits: {connections: 5, connections_per_address: 3, command_timeout: 1s, idle_timeout: 1500ms, data_timeout: 2s, errors_per_session: 3, recipients_per_message: 3}',
      ),
    );
  });
  afterAll(async () => {
    await relay.stop();
    await upstream.close();
  });

  it('refuses the connection over the per-address limit with 421 4.7.0 while another address is greeted, and counts all addresses against the total', async () => {
    const open = [await raw(relay.port), await raw(relay.port), await raw(relay.port)];
    for (const c of open) expect((await c.reply()).text).toMatch(/^220 /);
    const fourth = await raw(relay.port);
    expect((await fourth.reply()).text).toBe('421 4.7.0 Too many connections from 127.0.0.1 (limits.connections_per_address: 3); close some or try again later');
    await fourth.closed;
    const other = [await raw(relay.port, '127.0.0.2'), await raw(relay.port, '127.0.0.2')];
    for (const c of other) expect((await c.reply()).text).toMatch(/^220 /);
    const sixth = await raw(relay.port, '127.0.0.3');
    expect((await sixth.reply()).text).toBe('421 4.7.0 Too many connections to this relay (limits.connections: 5); try again later');
    await sixth.closed;
    for (const c of [...open, ...other]) {
      c.write('QUIT');
      await c.closed;
    }
    expect(await relay.metrics()).toMatch(/^sendas_client_limits_total\{limit="connections_per_address"\} 1$/m);
    expect(relay.logs.filter((l) => l.msg === 'client held to limits.connections_per_address')).toMatchObject([{ client: '127.0.0.1', limit: 'connections_per_address' }]);
  });

  it('cuts a command line fed one byte at a time at the command deadline, counted from its first byte', async () => {
    const c = await greeted(relay.port, '127.0.0.4');
    const line = 'MAIL FROM:<crm@crm.local>';
    const started = performance.now();
    let i = 0;
    const feeder = setInterval(() => c.writeRaw(line[i++ % line.length]!), 200);
    try {
      const r = await c.reply(5_000);
      expect(r.text).toBe('421 4.4.2 Command timeout: the command line did not end within 1s (limits.command_timeout); closing the connection');
      const closedAt = await c.closed;
      expect(r.at - started).toBeGreaterThanOrEqual(950);
      expect(closedAt - started).toBeLessThan(2_500);
      await relay.waitForLog((l) => l.msg === 'client held to limits.command_timeout' && l.client === '127.0.0.4');
    } finally {
      clearInterval(feeder);
    }
  });

  it('closes a silent session at the idle timeout', async () => {
    const c = await greeted(relay.port, '127.0.0.5');
    const since = performance.now();
    const r = await c.reply(5_000);
    expect(r.text).toBe('421 4.4.2 Idle timeout: nothing from the client for 1.5s (limits.idle_timeout); closing the connection');
    expect(r.at - since).toBeGreaterThanOrEqual(1_400);
    await c.closed;
  });

  it('cuts a message that keeps trickling in at the data deadline, and relays nothing of it', async () => {
    const before = upstream.messages.length;
    const c = await greeted(relay.port, '127.0.0.6');
    c.write('MAIL FROM:<crm@crm.local>');
    expect((await c.reply()).text).toMatch(/^250 /);
    c.write('RCPT TO:<customer@example.net>');
    expect((await c.reply()).text).toMatch(/^250 /);
    c.write('DATA');
    const dataAt = (await c.reply()).at;
    c.write('From: support@acme.example');
    c.write('Subject: slow');
    c.write('');
    const feeder = setInterval(() => c.write('a line of the body, one every 300 ms'), 300);
    try {
      const r = await c.reply(5_000);
      expect(r.text).toBe('421 4.4.2 Data timeout: the message did not end within 2s (limits.data_timeout); closing the connection');
      expect(r.at - dataAt).toBeGreaterThanOrEqual(1_950);
      await c.closed;
    } finally {
      clearInterval(feeder);
    }
    expect(upstream.messages.length).toBe(before);
  });

  it('closes the session with 421 4.7.0 on the command after the last allowed error', async () => {
    const c = await greeted(relay.port, '127.0.0.7');
    for (let i = 0; i < 3; i++) {
      c.write('RCPT TO:<customer@example.net>');
      expect((await c.reply()).text).toMatch(/^503 /);
    }
    c.write('NOOP');
    expect((await c.reply()).text).toBe('421 4.7.0 Too many errors in this session (limits.errors_per_session: 3); closing the connection');
    await c.closed;
  });

  it('refuses recipients over the limit with 452 4.5.3 and relays the message to the ones accepted', async () => {
    const to = ['a@example.net', 'b@example.net', 'c@example.net', 'd@example.net'];
    const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'crm@crm.local', to, data: message({ From: 'support@acme.example', To: 'a@example.net', Subject: 'many' }) });
    expect(r.exitCode).toBe(0);
    const refused = r.replies.filter((x) => x.code === 452);
    expect(refused).toEqual([{ command: 'RCPT TO:<d@example.net>', code: 452, error: true, text: '4.5.3 Too many recipients: at most 3 per message (limits.recipients_per_message); send the rest in another message' }]);
    const got = await upstream.nextMessage();
    expect(got.rcptTo).toEqual(['a@example.net', 'b@example.net', 'c@example.net']);
  });
});
