/**
 * The listeners and the monitoring port as ops write them: the single mapping or a list, TLS with
 * their own certificate and key (any secret form), and every mistake reported with its key path
 * and line: a TLS listener without a pair, a pair that doesn't belong together, two listeners on
 * one socket; and what `check` warns about.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffSnapshots } from '../../src/config/diff.js';
import { ConfigError, parseConfig } from '../../src/config/load.js';

const TLS = join(resolve(dirname(fileURLToPath(import.meta.url)), '../..'), 'test/fixtures/tls');
const SERVER = `servers:
  - name: main
    host: smtp.acme.example
    username: relay@acme.example
    password: main-pw
`;

let dir: string;
let file: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sendas-listeners-test-'));
  file = join(dir, 'relay.yaml');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const parse = (text: string, env: NodeJS.ProcessEnv = {}) => parseConfig(text, file, { env });
function problems(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parse(text, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`);
  }
  throw new Error('expected the configuration to be refused');
}

describe('listen: one mapping or a list', () => {
  it('reads the issue’s three listeners, with the certificate and key from files and the defaults filled in', () => {
    writeFileSync(join(dir, 'relay.crt'), readFileSync(join(TLS, 'server.pem')));
    writeFileSync(join(dir, 'relay.key'), readFileSync(join(TLS, 'server.key')));
    const s = parse(`listen:
  - {host: 0.0.0.0, port: 587, tls: starttls, cert: {file: relay.crt}, key: {file: relay.key}, allow: []}
  - {host: 0.0.0.0, port: 465, tls: implicit, cert: {file: relay.crt}, key: {env: RELAY_KEY}, allow: [], min_tls_version: TLSv1.3}
  - {host: 127.0.0.1, port: 2525, allow: ["127.0.0.1/32"]}
${SERVER}`, { RELAY_KEY: readFileSync(join(TLS, 'server.key'), 'utf8') });
    expect(s.listeners.map((l) => [l.path, l.host, l.port, l.tls, l.minTlsVersion, l.allow, l.allowPlaintextAuth, l.cert?.source, l.key?.source])).toEqual([
      ['listen[0]', '0.0.0.0', 587, 'starttls', 'TLSv1.2', [], false, `file ${join(dir, 'relay.crt')}`, `file ${join(dir, 'relay.key')}`],
      ['listen[1]', '0.0.0.0', 465, 'implicit', 'TLSv1.3', [], false, `file ${join(dir, 'relay.crt')}`, 'env RELAY_KEY'],
      ['listen[2]', '127.0.0.1', 2525, 'none', 'TLSv1.2', ['127.0.0.1/32'], false, undefined, undefined],
    ]);
    expect(s.listeners[0]!.cert!.reveal()).toContain('-----BEGIN CERTIFICATE-----');
    // the certificate's files are watched like every secret file: a renewed certificate is a reload
    expect(s.secretFiles).toEqual([join(dir, 'relay.crt'), join(dir, 'relay.key')]);
    expect(s.warnings).toEqual([]);
  });

  it('keeps the single mapping of earlier releases as one listener at key path "listen"', () => {
    const s = parse(`listen:\n  port: 2626\n  max_message_size: 1MB\n${SERVER}`);
    expect(s.listeners.map((l) => [l.path, l.port, l.maxMessageSize, l.tls])).toEqual([['listen', 2626, 1048576, 'none']]);
  });

  it('reports a problem inside the list at its item’s key path and line, not as "invalid input"', () => {
    expect(problems(`listen:\n  - {port: 2525}\n  - {port: 25x, tls: sometimes}\n${SERVER}`)).toEqual([
      '3:12 listen[1].port: must be a port number',
      '3:22 listen[1].tls: Invalid option: expected one of "none"|"starttls"|"implicit"',
    ]);
    expect(problems(`listen:\n  prot: 2525\n${SERVER}`)[0]).toMatch(/^2:3 listen\.prot: unknown key "prot" \(did you mean "port"\?\)/);
    expect(problems(`listen: []\n${SERVER}`)).toEqual(['1:9 listen: needs at least one listener (or leave `listen:` out for the default one)']);
  });

  it('refuses TLS without a certificate and key, saying which is missing', () => {
    expect(problems(`listen:\n  - port: 587\n    tls: starttls\n${SERVER}`)).toEqual([
      '3:10 listen[0].tls: tls starttls needs `cert:` and `key:` (PEM text, {env: NAME} or {file: PATH})',
    ]);
    expect(problems(`listen:\n  port: 465\n  tls: implicit\n  cert: {file: ${join(TLS, 'server.pem')}}\n${SERVER}`)).toEqual([
      '3:8 listen.tls: tls implicit needs `key:` (PEM text, {env: NAME} or {file: PATH})',
    ]);
  });

  it('refuses a key that does not belong to the certificate, and text that is no PEM, without quoting either', () => {
    const other = readFileSync(join(TLS, 'ca.key'), 'utf8');
    const text = (cert: string, key: string) => `listen:\n  port: 587\n  tls: starttls\n  cert: {env: CERT}\n  key: {env: KEY}\n${SERVER}`.replace('CERT}', `${cert}}`).replace('KEY}', `${key}}`);
    const env = { CERT: readFileSync(join(TLS, 'server.pem'), 'utf8'), KEY: other, JUNK: 'hunter2-not-a-pem' };
    expect(problems(text('CERT', 'KEY'), env)).toEqual(['5:8 listen.key: does not belong to the certificate in `cert:` (key values mismatch)']);
    const junk = problems(text('JUNK', 'KEY'), env);
    expect(junk).toEqual(['4:9 listen.cert: is not a PEM certificate (it should start with -----BEGIN CERTIFICATE-----)']);
    expect(junk.join('\n')).not.toContain('hunter2');
  });

  it('refuses two listeners on the same host and port, or a port also taken by a wildcard listener', () => {
    expect(problems(`listen:\n  - {host: 127.0.0.1, port: 2525}\n  - {host: 127.0.0.1, port: 2525}\n  - {host: 0.0.0.0, port: 2525}\n${SERVER}`)).toEqual([
      '3:29 listen[1].port: 127.0.0.1:2525 is already taken by listen[0] (127.0.0.1:2525): each listener needs its own address and port',
      '4:27 listen[2].port: 0.0.0.0:2525 is already taken by listen[0] (127.0.0.1:2525): each listener needs its own address and port',
    ]);
    // port 0 is "any free port": never a clash
    expect(parse(`listen:\n  - {port: 0}\n  - {port: 0}\n${SERVER}`).listeners).toHaveLength(2);
  });

  it('warns about a certificate on a plain listener and about passwords accepted in clear beyond this host', () => {
    const s = parse(`listen:\n  - {host: 0.0.0.0, port: 2525, allow_plaintext_auth: true}\n  - {port: 2526, cert: {file: ${join(TLS, 'server.pem')}}}\n${SERVER}`);
    expect(s.warnings.map((w) => w.path)).toEqual(['listen[0].allow_plaintext_auth', 'listen[1]']);
    expect(s.warnings[0]!.message).toMatch(/accepts relay passwords without TLS from any client/);
  });
});

describe('http: the monitoring port', () => {
  it('reads http.token in any secret form and warns when the port listens beyond loopback without one', () => {
    expect(parse(`http:\n  host: 127.0.0.1\n${SERVER}`).warnings).toEqual([]);
    for (const host of ['0.0.0.0', '::', '192.168.10.5']) {
      const s = parse(`http:\n  host: "${host}"\n${SERVER}`);
      expect(s.warnings).toEqual([{ path: 'http.host', message: expect.stringContaining(`listens on ${host}, beyond this host, without \`token:\``) }]);
    }
    const s = parse(`http:\n  host: 0.0.0.0\n  token: {env: OPS_TOKEN}\n${SERVER}`, { OPS_TOKEN: 'tok-123' });
    expect(s.warnings).toEqual([]);
    expect(s.http && s.http.token?.reveal()).toBe('tok-123');
    expect(JSON.stringify(s.http)).not.toContain('tok-123');
  });

  it('applies a new token at once; a new host or port needs a restart', () => {
    const before = parse(`http:\n  token: a-token\n${SERVER}`);
    expect(diffSnapshots(before, parse(`http:\n  token: b-token\n${SERVER}`))).toMatchObject({ settings: ['http.token'], needsRestart: [] });
    expect(diffSnapshots(before, parse(`http:\n  port: 9026\n  token: a-token\n${SERVER}`))).toMatchObject({ settings: [], needsRestart: ['http'] });
  });
});

describe('a reload of the listeners', () => {
  it('applies a new certificate, allow or size at once and names a changed socket as needing a restart', () => {
    const server = { CERT: readFileSync(join(TLS, 'server.pem'), 'utf8'), KEY: readFileSync(join(TLS, 'server.key'), 'utf8') };
    const other = { CERT: readFileSync(join(TLS, 'ca.pem'), 'utf8'), KEY: readFileSync(join(TLS, 'ca.key'), 'utf8') };
    const yaml = (port = 587, tls = 'starttls', extra = '') => `listen:\n  - {port: ${port}, tls: ${tls}, cert: {env: CERT}, key: {env: KEY}${extra}}\n  - {port: 2525}\n${SERVER}`;
    const before = parse(yaml(), server);
    expect(diffSnapshots(before, parse(yaml(), server))).toMatchObject({ settings: [], needsRestart: [] });
    expect(diffSnapshots(before, parse(yaml(), other)).settings).toEqual(['listen[0].cert', 'listen[0].key']);
    expect(diffSnapshots(before, parse(yaml(587, 'starttls', ', allow: [], max_message_size: 1MB'), server)).settings).toEqual(['listen[0].allow', 'listen[0].max_message_size']);
    expect(diffSnapshots(before, parse(yaml(588), server)).needsRestart).toEqual(['listen[0].port']);
    expect(diffSnapshots(before, parse(yaml(587, 'implicit'), server)).needsRestart).toEqual(['listen[0].tls']);
    expect(diffSnapshots(before, parse(`listen:\n  port: 2525\n${SERVER}`)).needsRestart).toEqual(['listen']);
  });
});
