import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { REPO, runProcess, type ProcessResult } from '../support/cli.js';
import { CLI, startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { swaks } from '../support/swaks.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, SECRETS, headerValues, message, split, startRelay } from './harness.js';
import { startOAuthServer } from '../support/oauth-server.js';
import { encryptTo, newIdentityFile } from '../../src/config/age.js';

/**
 * Encrypted secrets as ops use them: `sendas secret keygen` and `encrypt` (the real CLI), a
 * relay.yaml whose every secret is an {age: …} ciphertext, the relay serving with it (swaks over
 * implicit TLS, the test upstream checking every password), `sendas check` with the wrong key,
 * and the `age` tool opening what sendas wrote.
 */
const TLS = join(REPO, 'test/fixtures/tls');
const CRM = { user: 'crm', password: 'crm-secret-4' };
const HTTP_TOKEN = 'http-token-secret-6';
const ALL_SECRETS = [...SECRETS, HTTP_TOKEN, 'typed-Vr38-secret', readFileSync(join(TLS, 'server.key'), 'utf8').split('\n')[1]!];

/** `sendas ARGS` with `input` on its stdin (a pipe, as in `printf %s pw | sendas secret encrypt`). */
function sendas(args: readonly string[], input = '', env: NodeJS.ProcessEnv = {}): Promise<ProcessResult> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', fail);
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

describe('a relay.yaml whose every secret is encrypted with age', () => {
  let dir: string;
  let upstream: TestUpstream;
  let relay: RelayProcess | undefined;
  let recipient: string;
  let otherRecipient: string;
  const outputs: string[] = [];
  const keyFile = () => join(dir, 'sendas.agekey');
  /** value → what `sendas secret encrypt` printed for it */
  const encrypted = new Map<string, string>();

  const yaml = (secret: (value: string, file?: string) => string, keyLine: string, upstreamPort: number) => `delivery: passthrough
${keyLine}http:
  host: 127.0.0.1
  port: 0
  token: ${secret(HTTP_TOKEN)}
listen:
  - host: 127.0.0.1
    port: 0
    tls: implicit
    allow: []
    cert: ${secret(readFileSync(join(TLS, 'server.pem'), 'utf8'), join(TLS, 'server.pem'))}
    key: ${secret(readFileSync(join(TLS, 'server.key'), 'utf8'), join(TLS, 'server.key'))}
clients:
  - username: crm
    password: ${secret(CRM.password)}
servers:
  - name: main
    host: 127.0.0.1
    port: ${upstreamPort}
    security: none
    username: relay@acme.example
    password: ${secret('server-secret-1')}
channels:
  - name: support
    address: support@acme.example
    override:
      password: ${secret('support-secret-2')}
agents:
  - name: alice
    address: alice@acme.example
    override:
      password: ${secret('alice-secret-3')}
`;
  const ageYaml = (port: number, key = `secrets:\n  key_file: sendas.agekey\n`) => yaml((v) => encrypted.get(v)!, key, port);
  const plainYaml = (port: number) => yaml((v, file) => (file ? `{file: ${file}}` : JSON.stringify(v)), '', port);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sendas-age-e2e-'));
    upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true });
    const keygen = await sendas(['secret', 'keygen', '--out', keyFile()]);
    outputs.push(keygen.stdout, keygen.stderr);
    expect(keygen.code, keygen.stderr).toBe(0);
    recipient = keygen.stdout.trim();
    // the passwords through the CLI, each naming the key another way: the recipient, the key file, the config's key
    const values = [CRM.password, 'server-secret-1', 'support-secret-2'];
    writeFileSync(join(dir, 'keyonly.yaml'), 'secrets:\n  key_file: sendas.agekey\n');
    const how = [['--recipient', recipient], ['--key', keyFile()], ['--config', join(dir, 'keyonly.yaml')]];
    const results = await Promise.all(values.map((v, i) => sendas(['secret', 'encrypt', ...how[i]!], v)));
    results.forEach((r, i) => {
      expect(r.code, r.stderr).toBe(0);
      outputs.push(r.stdout, r.stderr);
      encrypted.set(values[i]!, r.stdout.trim());
    });
    // the rest with the same function in this process (each CLI start costs a second of CPU)
    for (const v of [HTTP_TOKEN, readFileSync(join(TLS, 'server.pem'), 'utf8'), readFileSync(join(TLS, 'server.key'), 'utf8'), 'alice-secret-3']) {
      encrypted.set(v, `{age: ${JSON.stringify(await encryptTo(recipient, v))}}`);
    }
    const other = await newIdentityFile(new Date());
    writeFileSync(join(dir, 'other.agekey'), other.text, { mode: 0o600 });
    otherRecipient = other.recipient;
    writeFileSync(join(dir, 'relay.yaml'), ageYaml(upstream.port));
    writeFileSync(join(dir, 'plain.yaml'), plainYaml(upstream.port));
    relay = await startRelayProcess(join(dir, 'relay.yaml'));
  }, 60_000);

  afterAll(async () => {
    await relay?.stop();
    await upstream?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('keygen wrote a 0600 key file and will not overwrite it', async () => {
    expect(recipient).toMatch(/^age1[a-z0-9]{58}$/);
    expect(statSync(keyFile()).mode & 0o777).toBe(0o600);
    const before = readFileSync(keyFile(), 'utf8');
    const again = await sendas(['secret', 'keygen', '--out', keyFile()]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('exists; not overwriting a key');
    expect(readFileSync(keyFile(), 'utf8')).toBe(before);
  });

  it('encrypt never takes the value from the command line', async () => {
    const r = await sendas(['secret', 'encrypt', '--recipient', recipient, 'argv-Kq11-secret']);
    expect([r.code, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toContain('takes no value on the command line');
    expect(r.stderr).not.toContain('argv-Kq11-secret');
  });

  it('encrypt prints one {age: …} line, which the age tool opens with the key file', async () => {
    for (const value of [CRM.password, 'server-secret-1', 'support-secret-2']) {
      const printed = encrypted.get(value)!;
      expect(printed).toMatch(/^\{age: "-----BEGIN AGE ENCRYPTED FILE-----\\n[^\n]+-----END AGE ENCRYPTED FILE-----\\n"\}$/);
      const armored = (parse(`password: ${printed}`) as { password: { age: string } }).password.age;
      const file = join(dir, 'one.age');
      writeFileSync(file, armored);
      const opened = await runProcess('age', ['-d', '-i', keyFile(), file], { cwd: dir, env: { PATH: process.env.PATH } });
      expect(opened.code, opened.stderr).toBe(0);
      expect(opened.stdout).toBe(value.replace(/\n$/, ''));
    }
  });

  it('on a terminal, encrypt asks twice at a prompt that does not echo what is typed', async () => {
    // python's pty: a real terminal for the CLI, typing as soon as each question shows
    const script = String.raw`
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b''
def until(token):
    global out
    end = time.time() + 20
    while token not in out and time.time() < end:
        try: out += os.read(fd, 4096)
        except OSError: break
until(b'(not shown): ')
os.write(fd, b'typed-Vr38-secret\r')
until(b'to be sure: ')
os.write(fd, b'typed-Vr38-secret\r')
until(b'paste the line above')
sys.stdout.write(out.decode())
`;
    const r = await runProcess('python3', ['-c', script, process.execPath, CLI, 'secret', 'encrypt', '--key', keyFile()], { cwd: dir, env: { PATH: process.env.PATH } });
    outputs.push(r.stdout, r.stderr);
    expect(r.stdout, r.stderr).toContain('secret (not shown): ');
    expect(r.stdout).not.toContain('typed-Vr38-secret');
    const printed = /\{age: "[^\n]+"\}/.exec(r.stdout)?.[0];
    const file = join(dir, 'typed.age');
    writeFileSync(file, (parse(`p: ${printed}`) as { p: { age: string } }).p.age);
    const opened = await runProcess('age', ['-d', '-i', keyFile(), file], { cwd: dir, env: { PATH: process.env.PATH } });
    expect(opened.stdout).toBe('typed-Vr38-secret');
  });

  it('relays exactly as the plain config does: the upstream checks every password, the client logs in over TLS', async () => {
    const send = async (port: number) => {
      const got = [];
      for (const from of ['support@acme.example', 'alice@acme.example']) {
        const r = await swaks({ server: '127.0.0.1', port, tls: 'tls', tlsCaPath: join(TLS, 'ca.pem'), auth: CRM, from, to: 'customer@example.net', data: message({ From: from, To: 'customer@example.net', Subject: 'encrypted' }) });
        expect(r.finalCode, r.transcript).toBe(250);
        const m = await upstream.nextMessage();
        const head = split(m.raw).head;
        got.push([m.login, m.mailFrom, m.rcptTo, headerValues(head, 'From'), headerValues(head, 'Sender')]);
      }
      return got;
    };
    const withAge = await send(relay!.port);
    expect(withAge.map((g) => g[0])).toEqual(['support@acme.example', 'alice@acme.example']);
    const plain = await startRelayProcess(join(dir, 'plain.yaml'));
    try {
      expect(await send(plain.port)).toEqual(withAge);
    } finally {
      await plain.stop();
      outputs.push(plain.lines.join('\n'), plain.stderr());
    }
    // the bearer token of the monitoring port was decrypted too
    const line = await relay!.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('monitoring on'));
    const url = `http://127.0.0.1:${line.port as number}/metrics`;
    expect((await fetch(url)).status).toBe(401);
    expect((await fetch(url, { headers: { authorization: `Bearer ${HTTP_TOKEN}` } })).status).toBe(200);
  });

  it('check says the same of both configs', async () => {
    const [withAge, plain] = await Promise.all([sendas(['check', '--config', join(dir, 'relay.yaml')]), sendas(['check', '--config', join(dir, 'plain.yaml')])]);
    outputs.push(withAge.stdout, withAge.stderr, plain.stdout, plain.stderr);
    expect([withAge.code, plain.code]).toEqual([0, 0]);
    // the same report but for the line naming the key
    const body = (s: string) => s.split('\n').slice(1).filter((l) => !l.startsWith('secret key: ')).join('\n');
    expect(body(withAge.stdout)).toBe(body(plain.stdout));
    expect(withAge.stdout).toContain(`\nsecret key: ${keyFile()} (encrypt new secrets to ${recipient})\n`);
  });

  it('with the wrong key, check names every secret it cannot open, by key path and line; serve refuses to start', async () => {
    const other = join(dir, 'other.agekey');
    const wrong = join(dir, 'wrong.yaml');
    writeFileSync(wrong, ageYaml(upstream.port, `secrets:\n  key_file: other.agekey\n`));
    const [r, serve] = await Promise.all([sendas(['check', '--config', wrong]), runProcess(process.execPath, [CLI, 'serve', '--config', wrong], { cwd: dir, env: { PATH: process.env.PATH } })]);
    outputs.push(r.stdout, r.stderr, serve.stdout, serve.stderr);
    expect(r.code).toBe(1);
    const why = `cannot decrypt with the key in ${other} (age: no identity matched any of the file's recipients)`;
    const named = r.stderr
      .split('\n')
      .filter((l) => l.endsWith(why))
      .map((l) => /^\s+\S+:(\d+):\d+ (\S+): /.exec(l)?.slice(1, 3));
    const lineOf = (needle: string) => readFileSync(wrong, 'utf8').split('\n').findIndex((l) => l.startsWith(needle)) + 1;
    expect(named).toEqual([
      [String(lineOf('  token:')), 'http.token'],
      [String(lineOf('    cert:')), 'listen[0].cert'],
      [String(lineOf('    key:')), 'listen[0].key'],
      [String(lineOf('    password:')), 'clients[0].password'],
      [expect.any(String), 'servers[0].password'],
      [expect.any(String), 'channels[0].override.password'],
      [expect.any(String), 'agents[0].override.password'],
    ]);
    expect(r.stderr).toContain(': 7 problems in the configuration');

    expect(serve.code).toBe(1);
    expect(serve.stdout).toContain('configuration is invalid; not starting');
    expect(serve.stderr).toContain(`servers[0].password: ${why}`);
  });

  it('with no key at all, check says how to configure one', async () => {
    const keyless = join(dir, 'keyless.yaml');
    writeFileSync(keyless, ageYaml(upstream.port, ''));
    // and the variable is enough
    const [r, withEnv] = await Promise.all([sendas(['check', '--config', keyless]), sendas(['check', '--config', keyless], '', { SENDAS_SECRET_KEY_FILE: keyFile() })]);
    outputs.push(r.stdout, r.stderr, withEnv.stdout, withEnv.stderr);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('servers[0].password: is encrypted, but no key is configured: set secrets.key_file in the config (or SENDAS_SECRET_KEY_FILE)');
    expect(withEnv.code, withEnv.stderr).toBe(0);
  });

  it('a reload (SIGHUP) with a ciphertext the key cannot open keeps serving with the old config', async () => {
    const file = join(dir, 'relay.yaml');
    copyFileSync(file, `${file}.good`);
    const foreign = `{age: ${JSON.stringify(await encryptTo(otherRecipient, 'support-secret-2'))}}`;
    writeFileSync(file, readFileSync(file, 'utf8').replace(encrypted.get('support-secret-2')!, foreign));
    const at = relay!.lines.length;
    relay!.child.kill('SIGHUP');
    const failed = await relay!.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reload failed'), { after: at });
    expect(JSON.stringify(failed.issues)).toContain('channels[0].override.password');
    const r = await swaks({ server: '127.0.0.1', port: relay!.port, tls: 'tls', tlsCaPath: join(TLS, 'ca.pem'), auth: CRM, from: 'support@acme.example', to: 'c@example.net', data: message({ From: 'support@acme.example', Subject: 'still' }) });
    expect(r.finalCode, r.transcript).toBe(250);
    expect((await upstream.nextMessage()).login).toBe('support@acme.example');
    copyFileSync(`${file}.good`, file);
  });

  it('no secret value appeared in any output', async () => {
    const code = await relay!.stop();
    expect(code).toBe(0);
    const all = [...outputs, relay!.lines.join('\n'), relay!.stderr()].join('\n');
    expect(all).toContain('"msg":"stopped"');
    for (const secret of ALL_SECRETS) expect(all).not.toContain(secret);
    relay = undefined;
  });
});

describe('an OAuth account with encrypted secrets and a key: the rotated refresh token in state_dir', () => {
  it('is stored encrypted to the key (0600), and the age tool opens it to the token the provider issued', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-age-oauth-'));
    const key = await newIdentityFile(new Date());
    const keyFile = join(dir, 'sendas.agekey');
    writeFileSync(keyFile, key.text, { mode: 0o600 });
    const oauth = await startOAuthServer({ clients: [{ clientId: 'sendas-app', clientSecret: 'app-Yd52-secret' }], refreshTokens: { 'rt-Jw84-secret': 'alice@contoso.example' }, rotateRefreshTokens: true });
    const upstream = await startTestUpstream({ xoauth2: (user, token) => oauth.validate(token)?.user === user });
    const age = async (v: string) => `{age: ${JSON.stringify(await encryptTo(key.recipient, v))}}`;
    const relay = await startRelay(`delivery: passthrough
state_dir: ./state
secrets: {key_file: ${keyFile}}
servers:
  - name: m365
    host: 127.0.0.1
    port: ${upstream.port}
    security: none
    auth: xoauth2
    username: relay@contoso.example
    oauth:
      client_id: sendas-app
      client_secret: ${await age('app-Yd52-secret')}
      grant: refresh_token
      token_url: ${oauth.tokenUrl}
agents:
  - name: alice
    address: alice@contoso.example
    override:
      oauth: {refresh_token: ${await age('rt-Jw84-secret')}}
`);
    try {
      const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'alice@contoso.example', to: 'c@example.net', data: message({ From: 'alice@contoso.example', Subject: 'token' }) });
      expect(r.finalCode, r.transcript).toBe(250);
      expect(upstream.xoauth2Attempts.at(-1)).toMatchObject({ username: 'alice@contoso.example', ok: true });
      const stateDir = join(relay.dir, 'state', 'oauth');
      const [name] = readdirSync(stateDir);
      const file = join(stateDir, name!);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const text = readFileSync(file, 'utf8');
      const rotated = oauth.refreshTokens.filter((t) => t.valid).map((t) => t.refreshToken);
      expect(rotated).toHaveLength(1);
      expect(text).not.toContain(rotated[0]);
      writeFileSync(join(dir, 'rt.age'), (JSON.parse(text) as { refresh_token: { age: string } }).refresh_token.age);
      const opened = await runProcess('age', ['-d', '-i', keyFile, join(dir, 'rt.age')], { cwd: dir, env: { PATH: process.env.PATH } });
      expect(opened.stdout).toBe(rotated[0]);
      for (const secret of ['app-Yd52-secret', 'rt-Jw84-secret', rotated[0]!]) expect(relay.rawLog()).not.toContain(secret);
    } finally {
      await relay.stop();
      await upstream.close();
      await oauth.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
