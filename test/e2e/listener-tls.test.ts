import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, runProcess } from '../support/cli.js';
import { CLI, startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { smtplib } from '../support/smtplib.js';
import { swaks } from '../support/swaks.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, SECRETS, headerValues, message, relayYaml, split, startRelay, type RunningRelay } from './harness.js';

/**
 * The listener on a LAN: TLS with the ops' own certificate (STARTTLS and implicit), passwords
 * only over TLS unless the client is in `allow` or the listener says otherwise, a certificate
 * renewed on disk served without a restart, and the monitoring port behind a bearer token. Real
 * clients only: swaks (--tls, --tlsc) and Python's smtplib (starttls(), SMTP_SSL).
 */
const TLS = join(REPO, 'test/fixtures/tls');
const CA = join(TLS, 'ca.pem');
const FIXTURE_FINGERPRINT = new X509Certificate(readFileSync(join(TLS, 'server.pem'))).fingerprint256;
const PAIR = `cert: {file: ${join(TLS, 'server.pem')}}, key: {file: ${join(TLS, 'server.key')}}`;
const CRM = { user: 'crm', password: 'crm-secret-4' };
/** AUTH PLAIN's initial response for crm: what a client would send, password included. */
const CRM_PLAIN = `PLAIN ${Buffer.from('\0crm\0crm-secret-4').toString('base64')}`;
const mail = (subject: string) => message({ From: 'support@acme.example', To: 'customer@example.net', Subject: subject });
const ehloReplies = (r: Awaited<ReturnType<typeof swaks>>) => r.replies.filter((x) => x.command.startsWith('EHLO')).map((x) => x.text);

describe('listeners: STARTTLS, implicit TLS, plain for allowed networks, plain on the LAN', () => {
  let upstream: TestUpstream;
  let relay: RunningRelay;
  let submission: number;
  let submissions: number;
  let local: number;
  let lan: number;
  let tls13: number;

  beforeAll(async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS });
    const listen = `listen:
  - {host: 0.0.0.0, port: 0, tls: starttls, ${PAIR}, allow: []}
  - {host: 0.0.0.0, port: 0, tls: implicit, ${PAIR}, allow: []}
  - {host: 127.0.0.1, port: 0, allow: ["127.0.0.1/32"]}
  - {host: 0.0.0.0, port: 0, allow: []}
  - {host: 0.0.0.0, port: 0, tls: implicit, ${PAIR}, min_tls_version: TLSv1.3}
`;
    // the harness binds every listener to 127.0.0.1 on a free port; the client (127.0.0.1) is in allow only on the third
    relay = await startRelay(relayYaml(upstream.port).replace('listen:\n  max_message_size: 2MB\n', listen));
    [submission, submissions, local, lan, tls13] = relay.ports as [number, number, number, number, number];
  });
  afterAll(async () => {
    const log = relay?.rawLog() ?? '';
    await relay?.stop();
    await upstream?.close();
    for (const secret of SECRETS) expect(log).not.toContain(secret);
    expect(log).not.toContain('PRIVATE KEY');
  });

  it('swaks --tls: AUTH is offered only after STARTTLS, and the message goes out marked ESMTPSA', async () => {
    const r = await swaks({ server: '127.0.0.1', port: submission, tls: 'starttls', tlsCaPath: CA, auth: CRM, from: 'support@acme.example', to: 'customer@example.net', data: mail('starttls') });
    expect(r.finalCode, r.transcript).toBe(250);
    const [before, after] = ehloReplies(r);
    expect(before).toContain('STARTTLS');
    expect(before).not.toMatch(/\bAUTH\b/);
    expect(after).toContain('AUTH PLAIN LOGIN');
    expect(after).not.toContain('STARTTLS');
    const got = await upstream.nextMessage();
    expect(headerValues(split(got.raw).head, 'Received')[0]).toMatch(/ with ESMTPSA id /);
  });

  it('swaks --tlsc: TLS from the first byte, verified against the ops’ CA, no STARTTLS offered', async () => {
    const r = await swaks({ server: '127.0.0.1', port: submissions, tls: 'tls', tlsCaPath: CA, auth: CRM, from: 'support@acme.example', to: 'customer@example.net', data: mail('implicit') });
    expect(r.finalCode, r.transcript).toBe(250);
    expect(ehloReplies(r)[0]).toContain('AUTH PLAIN LOGIN');
    expect(ehloReplies(r)[0]).not.toContain('STARTTLS');
    expect(headerValues(split((await upstream.nextMessage()).raw).head, 'Received')[0]).toMatch(/ with ESMTPSA id /);
  });

  it('Python smtplib starttls() and SMTP_SSL see the configured certificate, TLS 1.2 or later, and relay', async () => {
    for (const [mode, port] of [['starttls', submission], ['ssl', submissions]] as const) {
      const r = await smtplib({ port, mode, ca: CA, login: CRM, send: { from: 'support@acme.example', to: ['customer@example.net'], data: mail(`python ${mode}`) } });
      expect(r.error).toBeNull();
      expect(r.fingerprint).toBe(FIXTURE_FINGERPRINT);
      expect(['TLSv1.2', 'TLSv1.3']).toContain(r.tlsVersion);
      expect(r.auth?.code).toBe(235);
      expect(r.sent?.code).toBe(250);
      expect(headerValues(split((await upstream.nextMessage()).raw).head, 'Subject')).toEqual([`python ${mode}`]);
    }
  });

  it('takes TLS 1.2 by default and refuses it where min_tls_version is TLSv1.3', async () => {
    const tls12 = await smtplib({ port: submissions, mode: 'ssl', maxTlsVersion: 'TLSv1_2' });
    expect([tls12.error, tls12.tlsVersion]).toEqual([null, 'TLSv1.2']);
    const refused = await smtplib({ port: tls13, mode: 'ssl', maxTlsVersion: 'TLSv1_2' });
    expect(refused.error).toMatch(/SSL|TLS|version/i);
    expect((await smtplib({ port: tls13, mode: 'ssl' })).tlsVersion).toBe('TLSv1.3');
  });

  it('on a plain listener, a client outside allow is not offered AUTH and gets 538 5.7.11 before any credentials are checked', async () => {
    const before = upstream.messages.length;
    const ehlo = await swaks({ server: '127.0.0.1', port: lan, to: 'customer@example.net', extraArgs: ['--quit-after', 'EHLO'] });
    expect(ehloReplies(ehlo)[0]).not.toMatch(/\bAUTH\b/);
    // a client that sends AUTH anyway (here with the right password) is refused all the same
    const raw = await smtplib({ port: lan, mode: 'plain', rawAuth: CRM_PLAIN });
    expect(raw.auth).toEqual({ code: 538, text: '5.7.11 Encryption required for requested authentication mechanism' });
    // swaks, told to log in, finds no AUTH to use and sends nothing
    const r = await swaks({ server: '127.0.0.1', port: lan, auth: CRM, from: 'support@acme.example', to: 'customer@example.net', data: mail('lan') });
    expect(r.exitCode).toBe(28);
    // and on the STARTTLS listener, AUTH before the upgrade is refused the same way
    const early = await smtplib({ port: submission, mode: 'starttls', rawAuth: CRM_PLAIN, authBeforeTls: true });
    expect(early.auth?.code).toBe(538);
    expect(early.ehlo[0]).not.toMatch(/\bAUTH\b/);
    expect(upstream.messages.length).toBe(before);
  });

  it('a reload that moves a TLS listener to another port keeps it on its socket and certificate until the restart, and says so', async () => {
    const yaml = readFileSync(relay.configFile, 'utf8');
    const at = relay.logs.length;
    // listen[1] would move to port 4650 with another certificate (the CA's own pair stands in for it)
    const moved = yaml.replace(`  - {host: 0.0.0.0, port: 0, tls: implicit, ${PAIR}, allow: []}\n`, `  - {host: 0.0.0.0, port: 4650, tls: implicit, cert: {file: ${CA}}, key: {file: ${join(TLS, 'ca.key')}}, allow: []}\n`);
    expect(moved).not.toBe(yaml);
    writeFileSync(relay.configFile, moved);
    relay.reload();
    const line = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reloaded'), { after: at });
    expect(line.msg).toMatch(/Restart sendas to apply listen\[1\]\.port$/);
    const r = await smtplib({ port: submissions, mode: 'ssl', ca: CA });
    expect([r.error, r.fingerprint]).toEqual([null, FIXTURE_FINGERPRINT]);
    writeFileSync(relay.configFile, yaml);
    relay.reload();
  });

  it('on a plain listener, a client in allow may still log in without TLS', async () => {
    const r = await swaks({ server: '127.0.0.1', port: local, auth: CRM, from: 'support@acme.example', to: 'customer@example.net', data: mail('local') });
    expect(r.finalCode, r.transcript).toBe(250);
    const py = await smtplib({ port: local, mode: 'plain', login: CRM, send: { from: 'support@acme.example', to: ['customer@example.net'], data: mail('local python') } });
    expect([py.auth?.code, py.sent?.code]).toEqual([235, 250]);
    const got = [await upstream.nextMessage(), await upstream.nextMessage()];
    expect(got.map((m) => headerValues(split(m.raw).head, 'Received')[0])).toEqual([expect.stringMatching(/ with ESMTPA id /), expect.stringMatching(/ with ESMTPA id /)]);
  });
});

describe('sendas serve: a certificate renewed on disk, the monitoring port’s token, check’s warning (real process)', () => {
  const TOKEN = 'ops-token-7f3a9c';
  let upstream: TestUpstream;
  let relay: RelayProcess;
  let dir: string;
  let ports: number[];
  let httpBase: string;

  const yaml = (http: string) => `${http}
listen:
  - {port: 0, tls: implicit, cert: {file: relay.crt}, key: {file: relay.key}, allow: ["127.0.0.1/32"]}
  - {port: 0, tls: starttls, cert: {file: relay.crt}, key: {file: relay.key}, allow: ["127.0.0.1/32"]}
delivery: passthrough
servers:
  - name: main
    host: 127.0.0.1
    port: ${upstream.port}
    security: none
    username: relay@acme.example
    password: server-secret-1
channels:
  - name: sales
    address: sales@acme.example
`;

  beforeAll(async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS });
    dir = mkdtempSync(join(tmpdir(), 'sendas-tls-reload-'));
    copyFileSync(join(TLS, 'server.pem'), join(dir, 'relay.crt'));
    copyFileSync(join(TLS, 'server.key'), join(dir, 'relay.key'));
    writeFileSync(join(dir, 'ops.token'), `${TOKEN}\n`);
    writeFileSync(join(dir, 'relay.yaml'), yaml('http:\n  host: 127.0.0.1\n  port: 0\n  token: {file: ops.token}'));
    relay = await startRelayProcess(join(dir, 'relay.yaml'));
    const listening = await Promise.all(['listen[0]', 'listen[1]'].map((path) => relay.waitForLog((l) => l.msg === 'sendas listening' && l.listener === path)));
    ports = listening.map((l) => Number(l.port));
    const monitoring = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('monitoring on'));
    httpBase = `http://127.0.0.1:${String(monitoring.port)}`;
  });
  afterAll(async () => {
    const code = await relay?.stop();
    await upstream?.close();
    expect(code).toBe(0);
    const output = relay.lines.join('\n') + relay.stderr();
    expect(output).not.toContain(TOKEN);
    expect(output).not.toContain('PRIVATE KEY');
  });

  it('serves a certificate replaced on disk to the next connection, on both TLS listeners, without a restart', async () => {
    const seen = async () => [(await smtplib({ port: ports[0]!, mode: 'ssl' })).fingerprint, (await smtplib({ port: ports[1]!, mode: 'starttls' })).fingerprint];
    expect(await seen()).toEqual([FIXTURE_FINGERPRINT, FIXTURE_FINGERPRINT]);

    // a renewal as certbot's or cert-manager's deploy step does it: new files renamed over the old ones
    const made = await runProcess('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'new.key', '-out', 'new.crt', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { cwd: dir, env: { PATH: process.env.PATH } });
    expect(made.code, made.stderr).toBe(0);
    const renewed = new X509Certificate(readFileSync(join(dir, 'new.crt'))).fingerprint256;
    expect(renewed).not.toBe(FIXTURE_FINGERPRINT);
    const at = relay.lines.length;
    renameSync(join(dir, 'new.key'), join(dir, 'relay.key'));
    renameSync(join(dir, 'new.crt'), join(dir, 'relay.crt'));
    const served = (path: string) =>
      relay.waitForLog((l) => l.listener === path && (l.certificate as { fingerprint256?: string } | undefined)?.fingerprint256 === renewed, { after: at, timeoutMs: 10_000 });
    await Promise.all([served('listen[0]'), served('listen[1]')]);

    expect(await seen()).toEqual([renewed, renewed]);
    // and the relay still relays over it
    const r = await smtplib({ port: ports[0]!, mode: 'ssl', send: { from: 'sales@acme.example', to: ['customer@example.net'], data: message({ From: 'sales@acme.example', Subject: 'renewed' }) } });
    expect(r.sent?.code).toBe(250);
    expect(headerValues(split((await upstream.nextMessage()).raw).head, 'Subject')).toEqual(['renewed']);
  });

  it('answers /status and /metrics only with the bearer token (401 and WWW-Authenticate: Bearer otherwise); health stays open', async () => {
    const get = async (path: string, token?: string) => {
      const res = await fetch(`${httpBase}${path}`, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
      return { status: res.status, auth: res.headers.get('www-authenticate'), text: await res.text() };
    };
    for (const path of ['/status', '/metrics']) {
      expect(await get(path)).toMatchObject({ status: 401, auth: 'Bearer realm="sendas"' });
      expect(await get(path, 'wrong-token')).toMatchObject({ status: 401, auth: 'Bearer realm="sendas"' });
      expect(await get(path, `${TOKEN}x`)).toMatchObject({ status: 401 });
      const ok = await get(path, TOKEN);
      expect(ok.status).toBe(200);
      expect(ok.text).not.toContain(TOKEN);
    }
    expect(await get('/healthz')).toMatchObject({ status: 200, text: 'ok\n' });
    expect(await get('/readyz')).toMatchObject({ status: 200, text: 'ready\n' });
  });

  it('sendas check warns when the monitoring port listens beyond loopback without a token, and not with one', async () => {
    const check = async (http: string) => {
      writeFileSync(join(dir, 'check.yaml'), yaml(http));
      return runProcess(process.execPath, [CLI, 'check', '--config', join(dir, 'check.yaml')], { cwd: dir, env: { PATH: process.env.PATH } });
    };
    const open = await check('http:\n  host: 0.0.0.0\n  port: 9025');
    expect(open.code).toBe(0);
    expect(open.stdout).toContain('\n  http.host: the monitoring port listens on 0.0.0.0, beyond this host, without `token:`');
    const closed = await check('http:\n  host: 0.0.0.0\n  port: 9025\n  token: {file: ops.token}');
    expect(closed.code).toBe(0);
    expect(closed.stdout).not.toContain('http.host');
    // the certificate each TLS listener serves, as ops compare it after a renewal
    expect(closed.stdout).toMatch(/\n {4}certificate .*CN=localhost, valid until \d{4}-\d\d-\d\d, SHA-256 [0-9A-F:]{95}\n/);
    expect(closed.stdout + closed.stderr).not.toContain(TOKEN);
  });
});
