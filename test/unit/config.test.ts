/**
 * Config validation as an operator meets it: what a valid relay.yaml turns into (defaults
 * included), how secrets are read and kept out of every printout, and how a broken file is
 * reported — every problem at once, each with its key path and the line:col to go to.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, formatIssue, formatIssues, loadConfigFile, parseConfig, type ConfigIssue } from '../../src/config/load.js';
import { Secret } from '../../src/config/secret.js';
import type { ConfigSnapshot } from '../../src/config/types.js';
import { accountFor, hasOwnAccount } from '../../src/config/account.js';
import { RelayError } from '../../src/errors/relay-error.js';
import { checkReport } from '../../src/cli/report.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURES = join(REPO, 'test/fixtures/config');
const FILE = '/etc/sendas/relay.yaml';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'sendas-config-test-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** Writes a file under the per-run temp dir and returns its absolute path. */
function tmpFile(name: string, content: string): string {
  const path = join(tmp, name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  return path;
}

/** The ConfigError a text produces; fails the test when the text is accepted. */
function configError(text: string, env: NodeJS.ProcessEnv = {}, file = FILE): ConfigError {
  try {
    parseConfig(text, file, { env });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected the configuration to be refused, but it was accepted');
}

/** "line:col path" per issue: the part of a report ops navigate by. */
function where(issues: readonly ConfigIssue[]): string[] {
  return issues.map((i) => `${i.line ?? '-'}:${i.col ?? '-'} ${i.path}`);
}

/** The snapshot as plain data, secrets shown as "secret(value, source)" so they can be compared. */
function plain(value: unknown): unknown {
  if (value instanceof Secret) return `secret(${value.reveal()}, ${value.source})`;
  if (value instanceof Map) return undefined;
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => !(v instanceof Map)).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

/** A server block that passes validation on its own, for tests about something else. */
const ONE_SERVER = `servers:
  - name: main
    host: smtp.acme.example
    username: relay@acme.example
    password: main-pw
`;

describe('a valid configuration', () => {
  it('config/relay.example.yaml loads into the documented snapshot', () => {
    const secretFile = tmpFile('example/support.secret', 'support-file-pw\n');
    const text = readFileSync(join(REPO, 'config/relay.example.yaml'), 'utf8');
    expect(text).toContain('/run/secrets/support');
    const file = join(tmp, 'example/relay.yaml');
    const snapshot = parseConfig(text.replace('/run/secrets/support', secretFile), file, {
      env: { CRM_RELAY_PASSWORD: 'crm-env-pw', MAIN_SMTP_PASSWORD: 'main-env-pw', ALICE_PASSWORD: 'alice-env-pw', M365_CLIENT_SECRET: 'm365-env-secret', OPS_TOKEN: 'ops-env-token' },
    });

    expect(plain(snapshot)).toEqual({
      version: expect.stringMatching(/^[0-9a-f]{12}$/),
      file,
      deliverability: { check: true, intervalMs: 21_600_000, dnsServers: [] },
      cluster: false,
      listeners: [{ host: '0.0.0.0', port: 2525, allow: ['127.0.0.0/8', '::1'], maxMessageSize: 26214400, tls: 'none', cert: undefined, key: undefined, minTlsVersion: 'TLSv1.2', allowPlaintextAuth: false, bareNewline: 'normalize', maxAttachmentSize: undefined, path: 'listen' }],
      limits: {
        connections: 500,
        connectionsPerAddress: 50,
        idleTimeoutMs: 300_000,
        commandTimeoutMs: 60_000,
        dataTimeoutMs: 600_000,
        errorsPerSession: 20,
        recipientsPerMessage: 1000,
        auth: { failuresPerAddress: 10, failuresPerLogin: 20, windowMs: 900_000, lockoutMs: 900_000, delayMs: 1000, maxDelayMs: 15_000 },
      },
      delivery: 'queue',
      queue: {
        dir: join(tmp, 'example/var/queue'),
        retryMs: [60_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000],
        maxAgeMs: 2 * 86_400_000,
        notify: 'postmaster@acme.example',
      },
      clients: [{ username: 'crm', password: 'secret(crm-env-pw, env CRM_RELAY_PASSWORD)', sendAs: ['support', 'sales'], path: 'clients[0]' }],
      servers: [
        {
          name: 'main',
          isDefault: true,
          type: 'smtp',
          preset: undefined,
          host: 'smtp.acme.example',
          port: 587,
          security: 'starttls',
          auth: 'login',
          username: 'relay@acme.example',
          password: 'secret(main-env-pw, env MAIN_SMTP_PASSWORD)',
          address: 'relay@acme.example',
          tls: { ca: undefined, servername: undefined, minVersion: undefined, rejectUnauthorized: true },
          oauth: undefined,
          allowPlaintextAuth: false,
          proxy: undefined,
          graphUrl: 'https://graph.microsoft.com',
          saveToSentItems: true,
          alternate: { host: 'smtp2.acme.example', port: 587, cooldownMs: 60_000 },
          maxRecipients: 100,
          rate: { count: 30, windowMs: 60_000 },
          connections: 5,
          daily: undefined,
          path: 'servers[0]',
        },
        {
          name: 'm365',
          isDefault: false,
          type: 'smtp',
          preset: 'office365',
          host: 'smtp.office365.com',
          port: 587,
          security: 'starttls',
          auth: 'xoauth2',
          username: 'relay@acme.example',
          password: undefined,
          address: 'relay@acme.example',
          tls: { ca: undefined, servername: undefined, minVersion: undefined, rejectUnauthorized: true },
          oauth: {
            tenant: 'acme.onmicrosoft.com',
            clientId: '00000000-0000-0000-0000-000000000000',
            clientSecret: 'secret(m365-env-secret, env M365_CLIENT_SECRET)',
            grant: 'client_credentials',
            tokenUrl: 'https://login.microsoftonline.com/acme.onmicrosoft.com/oauth2/v2.0/token',
            scope: 'https://outlook.office365.com/.default',
            refreshToken: undefined,
          },
          allowPlaintextAuth: false,
          proxy: undefined,
          graphUrl: 'https://graph.microsoft.com',
          alternate: undefined,
          // the office365 preset's limits per mailbox
          maxRecipients: 500,
          rate: { count: 30, windowMs: 60_000 },
          connections: 3,
          daily: { messages: undefined, recipients: 10_000 },
          saveToSentItems: true,
          path: 'servers[1]',
        },
      ],
      identities: [
        {
          kind: 'channel',
          name: 'support',
          address: 'support@acme.example',
          displayName: 'Acme Support',
          serverName: undefined,
          override: { username: 'support@acme.example', password: `secret(support-file-pw, file ${secretFile})`, auth: undefined, refreshToken: undefined },
          path: 'channels[0]',
        },
        { kind: 'channel', name: 'sales', address: 'sales@acme.example', displayName: undefined, serverName: undefined, override: undefined, path: 'channels[1]' },
        {
          kind: 'channel',
          name: 'helpdesk',
          address: 'helpdesk@acme.example',
          displayName: undefined,
          serverName: 'm365',
          override: { username: 'helpdesk@acme.example', password: undefined, auth: undefined, refreshToken: undefined },
          path: 'channels[2]',
        },
        {
          kind: 'agent',
          name: 'alice',
          address: 'alice@acme.example',
          displayName: undefined,
          serverName: undefined,
          override: { username: 'alice@acme.example', password: 'secret(alice-env-pw, env ALICE_PASSWORD)', auth: undefined, refreshToken: undefined },
          path: 'agents[0]',
        },
      ],
      policy: { from: 'rewrite', unknownSender: 'reject' },
      log: { level: 'info', redact: false },
      history: { keepMs: 30 * 86_400_000 },
      http: { host: '0.0.0.0', port: 9025, token: 'secret(ops-env-token, env OPS_TOKEN)' },
      stateDir: join(tmp, 'example/var/state'),
      warnings: [],
      secretFiles: [secretFile],
      defaultServer: expect.objectContaining({ name: 'main', isDefault: true }),
    });
    expect(snapshot.defaultServer).toBe(snapshot.servers[0]);
    expect(snapshot.serversByName.get('main')).toBe(snapshot.servers[0]);
    expect(snapshot.identitiesByAddress.get('alice@acme.example')?.name).toBe('alice');
    expect(snapshot.identitiesByName.get('sales')?.address).toBe('sales@acme.example');
    expect(snapshot.clientsByUsername.get('crm')?.sendAs).toEqual(['support', 'sales']);
  });

  it('fills in listen, delivery and policy defaults when the file only lists servers', () => {
    const s = parseConfig(ONE_SERVER, FILE, { env: {} });
    expect(s.listeners).toEqual([{ host: '127.0.0.1', port: 2525, allow: ['127.0.0.0/8', '::1'], maxMessageSize: 26214400, tls: 'none', cert: undefined, key: undefined, minTlsVersion: 'TLSv1.2', allowPlaintextAuth: false, bareNewline: 'normalize', maxAttachmentSize: undefined, path: 'listen' }]);
    expect(s.delivery).toBe('queue');
    expect(s.queue).toEqual({ dir: join(dirname(FILE), 'var/queue'), retryMs: [60_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000], maxAgeMs: 172_800_000, notify: undefined });
    expect(s.policy).toEqual({ from: 'rewrite', unknownSender: 'reject' });
    expect(s.clients).toEqual([]);
    expect(s.identities).toEqual([]);
    expect(s.warnings).toEqual([]);
  });

  it('reads sizes in binary units and bare numbers as bytes', () => {
    const size = (v: string) => parseConfig(`listen:\n  max_message_size: ${v}\n${ONE_SERVER}`, FILE, { env: {} }).listeners[0]!.maxMessageSize;
    expect(size('25MB')).toBe(26214400);
    expect(size('10mb')).toBe(10485760);
    expect(size('512KB')).toBe(524288);
    expect(size('1GB')).toBe(1073741824);
    expect(size('1048576')).toBe(1048576);
  });

  it('reads listen.bare_newline and listen.max_attachment_size, and names the key of a wrong value', () => {
    const listen = (yaml: string) => parseConfig(`listen:\n${yaml}${ONE_SERVER}`, FILE, { env: {} }).listeners[0];
    expect(listen('  bare_newline: Reject\n  max_attachment_size: 10MB\n')).toMatchObject({ bareNewline: 'reject', maxAttachmentSize: 10485760 });
    const err = configError(`listen:\n  bare_newline: strip\n  max_attachment_size: lots\n${ONE_SERVER}`);
    expect(err.issues.map((i) => `${i.line}:${i.col} ${i.path}`)).toEqual(['2:17 listen.bare_newline', '3:24 listen.max_attachment_size']);
    expect(err.issues[1]!.message).toMatch(/"lots" is not a size/);
  });

  it('derives port from security, auth from username, address from username, and default from being alone', () => {
    const s = parseConfig(
      `servers:
  - name: relay25
    host: mx.internal.example
    security: none
    address: noreply@internal.example
  - name: submission
    host: smtp.acme.example
    username: relay@acme.example
    password: pw
    default: true
  - name: smtps
    host: smtps.acme.example
    security: tls
    auth: plain
    username: smtps-login
    password: pw
    address: smtps@acme.example
  - name: custom
    host: smtp.custom.example
    port: 2587
    auth: cram-md5
    username: c@custom.example
    password: pw
`,
      FILE,
      { env: {} },
    );
    const view = s.servers.map((x) => ({ name: x.name, port: x.port, security: x.security, auth: x.auth, username: x.username, address: x.address, isDefault: x.isDefault }));
    expect(view).toEqual([
      { name: 'relay25', port: 25, security: 'none', auth: 'none', username: undefined, address: 'noreply@internal.example', isDefault: false },
      { name: 'submission', port: 587, security: 'starttls', auth: 'login', username: 'relay@acme.example', address: 'relay@acme.example', isDefault: true },
      { name: 'smtps', port: 465, security: 'tls', auth: 'plain', username: 'smtps-login', address: 'smtps@acme.example', isDefault: false },
      { name: 'custom', port: 2587, security: 'starttls', auth: 'cram-md5', username: 'c@custom.example', address: 'c@custom.example', isDefault: false },
    ]);
    expect(s.defaultServer.name).toBe('submission');
  });

  it('treats a lone server as the default even without `default: true` (or with `default: false`)', () => {
    expect(parseConfig(ONE_SERVER, FILE, { env: {} }).defaultServer.name).toBe('main');
    const s = parseConfig(ONE_SERVER.replace('    host:', '    default: false\n    host:'), FILE, { env: {} });
    expect(s.servers[0]!.isDefault).toBe(true);
    expect(s.defaultServer).toBe(s.servers[0]);
  });

  it('gives an identity an override: username defaults to its address; `override:` alone = override without password', () => {
    const s = parseConfig(
      `${ONE_SERVER}channels:
  - name: support
    address: support@acme.example
    override:
  - name: sales
    address: sales@acme.example
    override:
      username: sales-login@acme.example
      password: sales-pw
  - name: news
    address: news@acme.example
agents:
  - name: alice
    address: alice@acme.example
    override: {}
`,
      FILE,
      { env: {} },
    );
    const byName = (n: string) => s.identitiesByName.get(n)!;
    expect(byName('support').override).toEqual({ username: 'support@acme.example', password: undefined });
    expect(byName('sales').override?.username).toBe('sales-login@acme.example');
    expect(byName('sales').override?.password?.reveal()).toBe('sales-pw');
    expect(byName('news').override).toBeUndefined();
    expect(byName('alice').override).toEqual({ username: 'alice@acme.example', password: undefined });
    expect(byName('alice').kind).toBe('agent');
    expect(byName('support').serverName).toBeUndefined();
  });

  it('looks identities up by address case-insensitively', () => {
    const s = parseConfig(`${ONE_SERVER}channels:\n  - name: support\n    address: Support@Acme.Example\n`, FILE, { env: {} });
    expect(s.identitiesByAddress.get('support@acme.example')?.name).toBe('support');
  });
});

describe('secrets', () => {
  const withPassword = (password: string) => ONE_SERVER.replace('password: main-pw', `password: ${password}`);
  const serverPassword = (text: string, env: NodeJS.ProcessEnv = {}, file = FILE) => parseConfig(text, file, { env }).servers[0]!.password!;

  it('takes a plain string as the secret itself', () => {
    const secret = serverPassword(withPassword('"plain pw: with # chars"'));
    expect(secret.reveal()).toBe('plain pw: with # chars');
    expect(secret.source).toBe('inline');
  });

  it('reads {env: NAME} from the env option, not from process.env', () => {
    const secret = serverPassword(withPassword('{env: MAIN_PW}'), { MAIN_PW: 'from-env' });
    expect(secret.reveal()).toBe('from-env');
    expect(secret.source).toBe('env MAIN_PW');
    expect(process.env.PATH).toBeDefined();
    const err = configError(withPassword('{env: PATH}'), {});
    expect(err.issues.map((i) => i.message)).toEqual(['environment variable PATH is not set']);
  });

  it('reads {file: PATH} relative to the config file, trimming exactly one trailing newline', () => {
    const dir = join(tmp, 'secret-files');
    const config = join(dir, 'relay.yaml');
    tmpFile('secret-files/one-newline', 'pw\n');
    tmpFile('secret-files/two-newlines', 'pw\n\n');
    tmpFile('secret-files/crlf', 'pw\r\n');
    tmpFile('secret-files/none', 'pw');
    tmpFile('secret-files/sub/inner', ' spaced pw \n');
    const read = (ref: string) => serverPassword(withPassword(`{file: ${ref}}`), {}, config).reveal();
    expect(read('one-newline')).toBe('pw');
    expect(read('two-newlines')).toBe('pw\n');
    expect(read('crlf')).toBe('pw');
    expect(read('none')).toBe('pw');
    expect(read('sub/inner')).toBe(' spaced pw ');
    expect(read('./sub/../one-newline')).toBe('pw');
    expect(read(join(dir, 'none'))).toBe('pw');
    expect(serverPassword(withPassword('{file: none}'), {}, config).source).toBe(`file ${join(dir, 'none')}`);
  });

  it('names a missing or empty environment variable, and never a value', () => {
    const text = `servers:
  - name: main
    default: true
    host: smtp.acme.example
    username: relay@acme.example
    password: {env: MAIN_SMTP_PASSWORD}
  - name: backup
    host: smtp.backup.example
    username: backup@acme.example
    password: {env: BACKUP_SMTP_PASSWORD}
`;
    const err = configError(text, { BACKUP_SMTP_PASSWORD: '', OTHER: 'unrelated-value' });
    expect(err.issues).toEqual([
      { path: 'servers[0].password', line: 6, col: 15, message: 'environment variable MAIN_SMTP_PASSWORD is not set' },
      { path: 'servers[1].password', line: 10, col: 15, message: 'environment variable BACKUP_SMTP_PASSWORD is empty' },
    ]);
    expect(err.message).not.toContain('unrelated-value');
  });

  it('names a secret file that cannot be read, with the path it tried', () => {
    const config = join(tmp, 'unreadable/relay.yaml');
    mkdirSync(join(tmp, 'unreadable/a-directory'), { recursive: true });
    tmpFile('unreadable/empty', '\n');
    const text = `clients:
  - username: crm
    password: {file: missing.secret}
${ONE_SERVER.replace('password: main-pw', 'password: {file: a-directory}')}channels:
  - name: support
    address: support@acme.example
    override:
      password: {file: empty}
`;
    const err = configError(text, {}, config);
    expect(err.issues).toEqual([
      { path: 'clients[0].password', line: 3, col: 15, message: `cannot read secret file ${join(tmp, 'unreadable/missing.secret')} (no such file)` },
      { path: 'servers[0].password', line: 8, col: 15, message: `cannot read secret file ${join(tmp, 'unreadable/a-directory')} (is a directory)` },
      { path: 'channels[0].override.password', line: 13, col: 17, message: `secret file ${join(tmp, 'unreadable/empty')} is empty` },
    ]);
  });

  it('refuses a secret written in another shape', () => {
    const err = configError(withPassword('{env: A, file: b}'));
    expect(err.issues).toContainEqual({ path: 'servers[0].password', line: 5, col: 15, message: 'must be a string, {env: VARIABLE}, {file: PATH} or {age: CIPHERTEXT}' });
    const err2 = configError(withPassword('{vault: x}'));
    expect(err2.issues).toEqual([{ path: 'servers[0].password', line: 5, col: 15, message: 'must be a string, {env: VARIABLE}, {file: PATH} or {age: CIPHERTEXT}' }]);
  });

  it('never prints a secret value: not in ConfigError, JSON, util.inspect or String()', () => {
    const dir = join(tmp, 'leak');
    tmpFile('leak/support.secret', 'FILE-S3CRET-value\n');
    const values = ['INLINE-S3CRET-value', 'ENV-S3CRET-value', 'FILE-S3CRET-value', 'CLIENT-S3CRET-value'];
    const text = `clients:
  - username: crm
    password: CLIENT-S3CRET-value
servers:
  - name: main
    host: smtp.acme.example
    username: relay@acme.example
    password: INLINE-S3CRET-value
channels:
  - name: support
    address: support@acme.example
    override:
      password: {file: support.secret}
agents:
  - name: alice
    address: alice@acme.example
    override:
      password: {env: ALICE_PASSWORD}
`;
    const env = { ALICE_PASSWORD: 'ENV-S3CRET-value' };
    const snapshot = parseConfig(text, join(dir, 'relay.yaml'), { env });
    const printed = [JSON.stringify(snapshot), inspect(snapshot, { depth: Infinity }), String(snapshot.servers[0]!.password), `${snapshot.clients[0]!.password}`];
    for (const out of printed) for (const v of values) expect(out).not.toContain(v);
    expect(JSON.stringify(snapshot.servers[0])).toContain('"password":"[secret]"');
    expect(inspect(snapshot.identitiesByName.get('alice'))).toContain('[secret from env ALICE_PASSWORD]');
    // the values are all there, behind reveal()
    expect(snapshot.servers[0]!.password!.reveal()).toBe('INLINE-S3CRET-value');
    expect(snapshot.identitiesByName.get('support')!.override!.password!.reveal()).toBe('FILE-S3CRET-value');
    expect(snapshot.identitiesByName.get('alice')!.override!.password!.reveal()).toBe('ENV-S3CRET-value');

    // the same file with mistakes next to every secret: the report has none of the values
    const broken = text
      .replace('    password: CLIENT', '    pasword: x\n    password: CLIENT')
      .replace('    password: INLINE', '    securty: tls\n    password: INLINE')
      .replace('{file: support.secret}', '{file: support.secret}\n      usrname: y')
      .replace('{env: ALICE_PASSWORD}', '{env: ALICE_PASSWORD}\n    servr: main');
    const err = configError(broken, env, join(dir, 'relay.yaml'));
    expect(err.issues.map((i) => i.path)).toEqual(['clients[0].pasword', 'servers[0].securty', 'channels[0].override.usrname', 'agents[0].servr']);
    for (const out of [err.message, JSON.stringify(err.issues), inspect(err)]) for (const v of values) expect(out).not.toContain(v);
  });

  // The yaml library's "Invalid escape sequence" message quotes the escape with up to 8 following
  // characters; copied verbatim into ConfigError, a double-quoted password with a backslash (common
  // in generated passwords) was partly printed by `sendas check` and logged by `sendas serve`
  // (src/config/yaml.ts keeps only the library's own words).
  const badEscape = ONE_SERVER.replace('password: main-pw', 'password: "\\Uhunter22"');
  it('reports a bad escape in a quoted password as a YAML syntax error at the value', () => {
    const err = configError(badEscape);
    expect(err.issues).toHaveLength(1);
    expect(err.issues[0]).toMatchObject({ path: '', line: 5, col: 16 }); // the backslash
    expect(err.issues[0]!.message).toMatch(/^YAML syntax: invalid escape sequence in a double-quoted string/);
  });
  it('does not echo password characters in a YAML syntax error inside a quoted password', () => {
    expect(configError(badEscape).message).not.toContain('hunter22');
  });
});

describe('a broken configuration', () => {
  it('reports every problem at once, in file order, each with key path and line:col', () => {
    const text = `listen:
  allow: ["127.0.0.0/8", "10.1.0.0/33"]
  max_message_size: 25XB
clients:
  - username: crm
    password: crm-pw
    send_as: [support, ghost]
servers:
  - name: main
    default: true
    host: smtp.acme.example
    securty: tls
    username: relay@acme.example
    password: main-pw
  - name: backup
    default: true
    host: smtp.backup.example
    username: backup@acme.example
  - name: nobody
    host: smtp.nobody.example
channels:
  - name: support
    address: support@acme.example
    server: mian
agents:
  - name: support
    address: Support@ACME.example
`;
    const err = configError(text);
    expect(err.file).toBe(FILE);
    expect(where(err.issues)).toEqual([
      '2:26 listen.allow[1]',
      '3:21 listen.max_message_size',
      '7:24 clients[0].send_as[1]',
      '12:5 servers[0].securty',
      '15:5 servers[1]',
      '16:14 servers[1].default',
      '24:13 channels[0].server',
      '26:11 agents[0].name',
      '27:14 agents[0].address',
    ]);
    const messages = err.issues.map((i) => i.message);
    expect(messages[0]).toBe('must be an IP address or a CIDR range such as 192.168.0.0/16 or ::1');
    expect(messages[1]).toContain('"25XB" is not a size');
    expect(messages[2]).toBe('"ghost" is not the name of a channel or agent');
    expect(messages[3]).toMatch(/^unknown key "securty" \(did you mean "security"\?\); known keys here: name, default, type, preset, host, port, security, auth/);
    expect(messages[4]).toMatch(/^auth is login but no password is set/);
    expect(messages[5]).toBe('only one server can be the default, and servers[0] ("main") already is');
    expect(messages[6]).toBe('unknown server "mian" (did you mean "main"?); servers are: main, backup, nobody');
    expect(messages[7]).toBe('duplicate name "support" (already used by channels[0]; channels and agents share one set of names)');
    expect(messages[8]).toBe('address Support@ACME.example is already used by channels[0] (addresses are compared case-insensitively)');

    expect(err.message.split('\n')).toEqual([
      `${FILE}: 9 problems in the configuration`,
      ...err.issues.map((i) => `  ${FILE}:${i.line}:${i.col} ${i.path}: ${i.message}`),
    ]);
    expect(err.message).toContain(`  ${FILE}:12:5 servers[0].securty: unknown key "securty" (did you mean "security"?)`);
  });

  it('reports a typo at the key itself, at every level, with a "did you mean" hint', () => {
    const err = configError(`sevrers: []
listen:
  prot: 2525
policy:
  unknown_sendr: reject
${ONE_SERVER}    tls:
      reject_unauthorised: false
clients:
  - username: crm
    password: x
    sendas: [support]
channels:
  - name: support
    adress: support@acme.example
    override:
      pasword: x
`);
    expect(err.issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message.split(';')[0]}`)).toEqual([
      '1:1 sevrers: unknown key "sevrers" (did you mean "servers"?)',
      '3:3 listen.prot: unknown key "prot" (did you mean "port"?)',
      '5:3 policy.unknown_sendr: unknown key "unknown_sendr" (did you mean "unknown_sender"?)',
      '12:7 servers[0].tls.reject_unauthorised: unknown key "reject_unauthorised" (did you mean "reject_unauthorized"?)',
      '16:5 clients[0].sendas: unknown key "sendas" (did you mean "send_as"?)',
      // the misspelt `adress` also leaves the required `address` missing: reported at the identity
      '18:5 channels[0].address: is required',
      '19:5 channels[0].adress: unknown key "adress" (did you mean "address"?)',
      '21:7 channels[0].override.pasword: unknown key "pasword" (did you mean "password"?)',
    ]);
    expect(err.issues[2]!.message).toBe('unknown key "unknown_sendr" (did you mean "unknown_sender"?); known keys here: from, unknown_sender');
  });

  it('gives no hint for a key that resembles nothing', () => {
    const err = configError(`${ONE_SERVER}    flavour: vanilla\n`);
    expect(err.issues).toEqual([
      {
        path: 'servers[0].flavour',
        line: 6,
        col: 5,
        message: 'unknown key "flavour"; known keys here: name, default, type, preset, host, port, security, auth, username, password, address, oauth, tls, allow_plaintext_auth, proxy, graph_url, save_to_sent_items, alternate, max_recipients, rate, connections, daily',
      },
    ]);
  });

  it('save_to_sent_items is for type graph: over SMTP the mailbox decides', () => {
    const err = configError(`${ONE_SERVER}    save_to_sent_items: false\n`);
    expect(err.issues.map((i) => `${i.path}: ${i.message}`)).toEqual([
      'servers[0].save_to_sent_items: applies to type graph only (over SMTP, Exchange and Gmail keep their own copy as the mailbox is set up)',
    ]);
  });

  it('requires a default when there are several servers', () => {
    const err = configError(`servers:
  - name: main
    host: smtp.acme.example
    address: relay@acme.example
  - name: backup
    host: smtp.backup.example
    address: relay@acme.example
`);
    expect(err.issues).toEqual([{ path: 'servers', line: 2, col: 3, message: 'no server is the default: set `default: true` on exactly one server' }]);
  });

  it('refuses duplicate server names, client logins and addresses differing only in case', () => {
    const err = configError(`clients:
  - username: crm
    password: a
  - username: crm
    password: b
servers:
  - name: main
    default: true
    host: a.example
    address: relay@acme.example
  - name: main
    host: b.example
    address: relay@acme.example
channels:
  - name: support
    address: support@acme.example
  - name: help
    address: SUPPORT@Acme.Example
`);
    expect(err.issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`)).toEqual([
      '4:15 clients[1].username: duplicate client username "crm" (already clients[0])',
      '11:11 servers[1].name: duplicate server name "main" (already used by servers[0])',
      '18:14 channels[1].address: address SUPPORT@Acme.Example is already used by channels[0] (addresses are compared case-insensitively)',
    ]);
  });

  it('refuses a server that signs in without a username or password', () => {
    const err = configError(`servers:
  - name: a
    default: true
    host: a.example
    auth: plain
  - name: b
    host: b.example
    username: b@acme.example
  - name: c
    host: c.example
  - name: d
    host: d.example
    username: d-login
    password: x
`);
    expect(err.issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`)).toEqual([
      '2:5 servers[0]: auth is plain but no username is set: add `username:` or set `auth: none`',
      '2:5 servers[0]: auth is plain but no password is set: add `password:` (a string, {env: NAME} or {file: PATH})',
      '6:5 servers[1]: auth is login but no password is set: add `password:` (a string, {env: NAME} or {file: PATH})',
      '13:15 servers[3].username: "d-login" is not an email address, so set `address:` to the account\'s mailbox',
    ]);
  });

  it('reports a missing required key where its parent is', () => {
    const err = configError(`servers:
  - name: main
    address: relay@acme.example
channels:
  - address: support@acme.example
`);
    expect(err.issues).toEqual([
      // host may come from a preset, so its absence is told at the server, with the way out
      { path: 'servers[0]', line: 2, col: 5, message: 'needs `host:` (or a `preset:`)' },
      { path: 'channels[0].name', line: 5, col: 5, message: 'is required' },
    ]);
  });

  it('refuses values of the wrong kind with a message saying what is expected', () => {
    const err = configError(`listen:
  port: 70000
  allow: [10.0.0.0/8, "192.168.1.300", "fe80::/129", "::1"]
${ONE_SERVER}    security: ssl
channels:
  - name: support team
    address: Support <support@acme.example>
policy:
  from: keep
`);
    expect(where(err.issues)).toEqual([
      '2:9 listen.port',
      '3:23 listen.allow[1]',
      '3:40 listen.allow[2]',
      '9:15 servers[0].security',
      '11:11 channels[0].name',
      '12:14 channels[0].address',
      '14:9 policy.from',
    ]);
    expect(err.issues[5]!.message).toBe('must be a plain email address such as support@acme.example (no display name, no angle brackets)');
    expect(err.issues[4]!.message).toMatch(/^must start with a letter or digit/);
  });

  it('refuses an empty servers list', () => {
    const err = configError('servers: []\n');
    expect(err.issues).toEqual([{ path: 'servers', line: 1, col: 10, message: 'at least one server is needed' }]);
  });

  it('reports YAML syntax errors with their line, before anything else', () => {
    const err = configError(`servers:
  - name: main
    host: smtp.acme.example
   address: relay@acme.example
  - name: [unclosed
`);
    expect(err.issues.length).toBeGreaterThanOrEqual(1);
    expect(err.issues[0]).toMatchObject({ path: '', line: 4 });
    for (const i of err.issues) expect(i.message).toMatch(/^YAML syntax: /);
    expect(formatIssue(FILE, err.issues[0]!)).toMatch(new RegExp(`^${FILE}:4:\\d+ YAML syntax: `));
  });

  it('refuses a key written twice', () => {
    const err = configError(`${ONE_SERVER}policy:\n  from: reject\n  from: rewrite\n`);
    expect(err.issues).toEqual([{ path: '', line: 8, col: 3, message: 'YAML syntax: Map keys must be unique' }]);
  });

  it('refuses an empty file, a comment-only file and a file that is not a mapping', () => {
    for (const text of ['', '\n\n', '# nothing here yet\n', '- servers\n', 'just text\n']) {
      const err = configError(text);
      expect(err.issues).toEqual([{ path: '', line: 1, col: 1, message: 'the file must be a YAML mapping with at least a `servers:` list' }]);
    }
  });

  it('refuses a file without servers', () => {
    const err = configError('policy:\n  from: reject\n');
    expect(err.issues).toEqual([{ path: 'servers', line: 1, col: 1, message: 'is required' }]);
  });
});

describe('warnings', () => {
  it('refuses a password in plain text to another host unless allow_plaintext_auth says so', () => {
    const err = configError(`servers:
  - name: far
    host: smtp.acme.example
    security: none
    username: relay@acme.example
    password: x
`);
    expect(err.issues).toEqual([
      {
        path: 'servers[0].security',
        line: 4,
        col: 15,
        message: 'auth login with security: none would send the password in plain text to smtp.acme.example; use starttls or tls, or set `allow_plaintext_auth: true` on this server',
      },
    ]);
    const allowed = parseConfig(`servers:
  - name: far
    host: smtp.acme.example
    security: none
    allow_plaintext_auth: true
    username: relay@acme.example
    password: x
`, FILE, { env: {} });
    expect(allowed.warnings).toEqual([{ path: 'servers[0]', message: 'server "far" sends its password in plain text (auth login with security: none), allowed by allow_plaintext_auth' }]);
  });

  it('warns about a password sent in plain text (security none with sign-in)', () => {
    const s = parseConfig(
      `servers:
  - name: local
    default: true
    host: 127.0.0.1
    security: none
    username: relay@acme.example
    password: x
  - name: open
    host: mx.internal.example
    security: none
    address: noreply@internal.example
`,
      FILE,
      { env: {} },
    );
    expect(s.warnings).toEqual([
      {
        path: 'servers[0]',
        message: 'server "local" sends its password in plain text (auth login with security: none) to this host',
      },
    ]);
  });

  it('warns about an override without password, unless its server signs in with auth none', () => {
    const s = parseConfig(
      `servers:
  - name: main
    default: true
    host: smtp.acme.example
    username: relay@acme.example
    password: x
  - name: open
    host: mx.internal.example
    address: noreply@internal.example
channels:
  - name: support
    address: support@acme.example
    override:
  - name: sales
    address: sales@acme.example
    server: open
    override:
  - name: billing
    address: billing@acme.example
    override:
      username: billing-login@acme.example
agents:
  - name: alice
    address: alice@acme.example
    override:
      password: y
`,
      FILE,
      { env: {} },
    );
    expect(s.warnings).toEqual([
      {
        path: 'channels[0].override',
        message: 'channel "support" overrides the server account but has no password: its messages are refused until `channels[0].override.password` is set',
      },
      {
        path: 'channels[2].override',
        message: 'channel "billing" overrides the server account but has no password: its messages are refused until `channels[2].override.password` is set',
      },
    ]);
  });

  it('warns about an agent override without password on the implicit default server', () => {
    const s = parseConfig(`${ONE_SERVER}agents:\n  - name: bob\n    address: bob@acme.example\n    override:\n`, FILE, { env: {} });
    expect(s.warnings.map((w) => w.path)).toEqual(['agents[0].override']);
    expect(s.warnings[0]!.message).toMatch(/^agent "bob" overrides the server account but has no password/);
  });
});

describe('formatIssue / formatIssues', () => {
  it('prints "FILE:LINE:COL path: message", dropping what is unknown', () => {
    expect(formatIssue('relay.yaml', { path: 'servers[0].securty', line: 12, col: 5, message: 'unknown key' })).toBe('relay.yaml:12:5 servers[0].securty: unknown key');
    expect(formatIssue('relay.yaml', { path: '', line: 3, col: 7, message: 'YAML syntax: x' })).toBe('relay.yaml:3:7 YAML syntax: x');
    expect(formatIssue('relay.yaml', { path: 'servers', line: 2, col: undefined, message: 'm' })).toBe('relay.yaml:2:1 servers: m');
    expect(formatIssue('relay.yaml', { path: '', line: undefined, col: undefined, message: 'cannot read' })).toBe('relay.yaml cannot read');
  });

  it('heads the list with the file and the number of problems', () => {
    const one: ConfigIssue = { path: 'a', line: 1, col: 2, message: 'first' };
    const two: ConfigIssue = { path: 'b.c', line: 3, col: 4, message: 'second' };
    expect(formatIssues('/x/relay.yaml', [one])).toBe('/x/relay.yaml: 1 problem in the configuration\n  /x/relay.yaml:1:2 a: first');
    expect(formatIssues('/x/relay.yaml', [one, two])).toBe(
      '/x/relay.yaml: 2 problems in the configuration\n  /x/relay.yaml:1:2 a: first\n  /x/relay.yaml:3:4 b.c: second',
    );
  });
});

describe('loadConfigFile', () => {
  it('loads a file by relative path, resolving {file: …} secrets against the file’s directory, not the cwd', async () => {
    const snapshot: ConfigSnapshot = await loadConfigFile(relative(process.cwd(), join(FIXTURES, 'good.yaml')), {
      env: {
        CRM_RELAY_PASSWORD: 'a',
        HELPDESK_RELAY_PASSWORD: 'b',
        MAIN_SMTP_PASSWORD: 'c',
        LEGACY_SMTP_PASSWORD: 'd',
        ALICE_PASSWORD: 'e',
      },
    });
    expect(snapshot.file).toBe(join(FIXTURES, 'good.yaml'));
    expect(process.cwd()).not.toBe(FIXTURES);
    const support = snapshot.identitiesByName.get('support')!;
    expect(support.override?.password?.reveal()).toBe(readFileSync(join(FIXTURES, 'support.secret'), 'utf8').replace(/\n$/, ''));
    expect(support.override?.password?.source).toBe(`file ${join(FIXTURES, 'support.secret')}`);
  });

  it('names a configuration file that does not exist, by absolute path', async () => {
    const missing = join(tmp, 'no-such-dir/relay.yaml');
    let err: unknown;
    try {
      await loadConfigFile(missing, { env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const ce = err as ConfigError;
    expect(ce.file).toBe(missing);
    expect(ce.issues).toEqual([{ path: '', line: undefined, col: undefined, message: 'cannot read the configuration file (no such file)' }]);
    expect(ce.message).toBe(`${missing}: 1 problem in the configuration\n  ${missing} cannot read the configuration file (no such file)`);
  });

  it('reports problems in a loaded file under its absolute path', async () => {
    const file = tmpFile('load/relay.yaml', `${ONE_SERVER}    securty: tls\n`);
    await expect(loadConfigFile(file, { env: {} })).rejects.toThrow(`${file}:6:5 servers[0].securty: unknown key "securty" (did you mean "security"?)`);
  });
});

describe('a server without an account of its own', () => {
  const SERVERS = `delivery: passthrough
servers:
  - name: m365
    default: true
    preset: office365
    oauth:
      tenant: contoso.onmicrosoft.com
      client_id: app
      client_secret: s3cret-Zr41
      grant: refresh_token
  - name: relay
    host: smtp.acme.example
    username: relay@acme.example
    password: pw
`;
  it('is valid while every identity on it overrides; its identities send with their own accounts', () => {
    const snapshot = parseConfig(
      `${SERVERS}channels:
  - name: support
    address: support@contoso.com
    override:
      username: support@contoso.com
      oauth: {refresh_token: rt-support}
  - name: other
    address: other@acme.example
    server: relay
agents:
  - name: alice
    address: alice@contoso.com
    override: {}
`,
      FILE,
    );
    const m365 = snapshot.serversByName.get('m365')!;
    expect(hasOwnAccount(m365)).toBe(false);
    const support = accountFor(snapshot, snapshot.identitiesByName.get('support'));
    expect(support).toMatchObject({ via: 'override', username: 'support@contoso.com', address: 'support@contoso.com', method: 'xoauth2' });
    // a message without identity would need the server account: refused with the fix, never sent as ''
    const none = accountFor(snapshot, undefined) as RelayError;
    expect(none).toBeInstanceOf(RelayError);
    expect([none.kind, none.status.code]).toEqual(['config', 554]);
    expect(none.fix).toBe('set servers[0].address (and the sign-in)');
    expect(checkReport(snapshot)).toContain('  m365 (default): smtp.office365.com:587 starttls, no account of its own (every identity on it signs in with its own)\n');
  });

  it('names each identity that would need the missing server account, and unknown_sender: default', () => {
    const err = configError(`${SERVERS}policy:
  unknown_sender: default
channels:
  - name: support
    address: support@contoso.com
    override: {username: support@contoso.com}
  - name: sales
    address: sales@contoso.com
agents:
  - name: bob
    address: bob@contoso.com
    server: m365
`);
    expect(err.issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`)).toEqual([
      `16:19 policy.unknown_sender: unknown_sender: default sends with the default server's own account, and servers[0] has none: set \`address:\` (and the sign-in) on servers[0], or use unknown_sender: reject`,
      `21:5 channels[1]: channel "sales" sends with server "m365"'s own account, and that server has none: give channel "sales" an \`override:\` with its own account, or set \`address:\` (and the sign-in) on servers[0]`,
      `24:5 agents[0]: agent "bob" sends with server "m365"'s own account, and that server has none: give agent "bob" an \`override:\` with its own account, or set \`address:\` (and the sign-in) on servers[0]`,
    ]);
  });

  it('in queue mode, warns that no failure notice can be sent through it when it is the default', () => {
    const snapshot = parseConfig(`${SERVERS.replace('delivery: passthrough\n', '')}channels:
  - name: support
    address: support@contoso.com
    override: {username: support@contoso.com}
`, FILE);
    expect(snapshot.warnings).toContainEqual({ path: 'servers[0]', message: expect.stringContaining('no failure notice can be sent') });
  });
});
