import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { explain } from '../../src/cli/explain.js';
import { diffSnapshots } from '../../src/config/diff.js';
import { ConfigHolder } from '../../src/config/holder.js';
import { ConfigError, loadConfigFile, parseConfig } from '../../src/config/load.js';
import { BASE_YAML } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'sendas-dkim-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const pem = (type: 'rsa' | 'ed25519', bits = 2048) =>
  (type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: bits }) : generateKeyPairSync('ed25519')).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const RSA = pem('rsa');
const ED = pem('ed25519');
writeFileSync(join(dir, 'acme.key'), RSA);
writeFileSync(join(dir, 'ed.key'), ED);
writeFileSync(join(dir, 'short.key'), pem('rsa', 1024));
writeFileSync(join(dir, 'tiny.key'), pem('rsa', 512));
writeFileSync(join(dir, 'not-a.key'), 'hunter2-not-a-key');

const load = (dkim: string) => parseConfig(`${BASE_YAML}\ndkim:\n${dkim}`, join(dir, 'relay.yaml'), { env: { ED_KEY: ED } });
const problems = (dkim: string) => {
  try {
    load(dkim);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  return [];
};

describe('dkim: in the snapshot', () => {
  it('holds one key per domain with its selector, algorithm, the p= of its public key and where it is written', () => {
    const s = load(`  - domain: Acme.Example
    selector: s2026
    key: {file: acme.key}
  - domain: bücher.example
    selector: ed1
    key: {env: ED_KEY}
    headers: [From, Subject]
`);
    const rsa = s.dkim.get('acme.example')!;
    expect(rsa).toMatchObject({ domain: 'acme.example', selector: 's2026', algorithm: 'rsa-sha256', keyType: 'rsa', bits: 2048, path: 'dkim[0]', line: expect.any(Number) });
    expect(rsa.publicKey).toBe(createPublicKey(RSA).export({ type: 'spki', format: 'der' }).toString('base64'));
    expect(rsa.headers).toContain('Message-ID');
    expect(rsa.key.reveal()).toBe(RSA.trimEnd());
    const ed = s.dkim.get('xn--bcher-kva.example')!;
    expect(ed).toMatchObject({ domain: 'xn--bcher-kva.example', algorithm: 'ed25519-sha256', keyType: 'ed25519', bits: undefined, headers: ['From', 'Subject'] });
    // the raw 32 bytes, as RFC 8463 publishes them
    expect(Buffer.from(ed.publicKey, 'base64')).toHaveLength(32);
    expect(JSON.stringify([...s.dkim.values()])).not.toContain('PRIVATE KEY');
    expect(s.secretFiles).toContain(join(dir, 'acme.key'));
  });

  it('is empty without dkim:', () => {
    expect(parseConfig(BASE_YAML, join(dir, 'relay.yaml'), { env: {} }).dkim.size).toBe(0);
  });

  it('refuses a key that cannot sign, a duplicate domain, a mismatched algorithm and headers without From, each at its key path', () => {
    const out = problems(`  - domain: a.example
    selector: s1
    key: {file: not-a.key}
  - domain: b.example
    selector: s1
    key: {file: tiny.key}
  - domain: A.example
    selector: s2
    key: {file: acme.key}
    algorithm: ed25519-sha256
  - domain: c.example
    selector: s1
    key: {file: acme.key}
    headers: [Subject]
`);
    expect(out).toEqual([
      expect.stringMatching(/^dkim\[0\]\.key: is not a PEM private key/),
      expect.stringMatching(/^dkim\[1\]\.key: is an RSA key of 512 bits: DKIM needs at least 1024/),
      expect.stringMatching(/^dkim\[2\]\.domain: duplicate domain "a.example" \(already signed by dkim\[0\]\)/),
      expect.stringMatching(/^dkim\[2\]\.algorithm: is ed25519-sha256 but the key is an RSA key/),
      expect.stringMatching(/^dkim\[3\]\.headers: must include From/),
    ]);
    expect(out.join('\n')).not.toContain('hunter2');
  });

  it('warns about an RSA key under 2048 bits but signs with it', () => {
    const s = load(`  - domain: acme.example
    selector: old
    key: {file: short.key}
`);
    expect(s.dkim.get('acme.example')!.bits).toBe(1024);
    expect(s.warnings.map((w) => w.path)).toContain('dkim[0].key');
  });

  it('a new key or selector is a change that applies at once', () => {
    const a = load(`  - {domain: acme.example, selector: s1, key: {file: acme.key}}\n`);
    const b = load(`  - {domain: acme.example, selector: s2, key: {env: ED_KEY}}\n`);
    expect(diffSnapshots(a, b).settings).toContain('dkim');
    expect(diffSnapshots(a, a).settings).not.toContain('dkim');
  });
});

describe('a key file is a secret file', () => {
  it('is watched with the config: replacing it (rotation) reloads the key; a broken key keeps the one before', async () => {
    const file = join(dir, 'rotate.yaml');
    writeFileSync(join(dir, 'rotate.key'), RSA);
    writeFileSync(file, `${BASE_YAML}\ndkim:\n  - {domain: acme.example, selector: s1, key: {file: rotate.key}}\n`);
    const holder = new ConfigHolder(await loadConfigFile(file), { load: (f) => loadConfigFile(f) });
    expect(holder.files).toContain(join(dir, 'rotate.key'));
    const before = holder.current.dkim.get('acme.example')!.publicKey;

    writeFileSync(join(dir, 'rotate.key'), ED);
    expect((await holder.reload('file changed'))?.settings).toContain('dkim');
    expect(holder.current.dkim.get('acme.example')).toMatchObject({ keyType: 'ed25519', algorithm: 'ed25519-sha256' });
    expect(holder.current.dkim.get('acme.example')!.publicKey).not.toBe(before);

    writeFileSync(join(dir, 'rotate.key'), 'not a key');
    await holder.reload('file changed');
    expect(holder.current.dkim.get('acme.example')!.keyType).toBe('ed25519');
  });
});

describe('sendas explain', () => {
  it('says whether the message would be signed, for the From it leaves with', () => {
    const s = load(`  - {domain: acme.example, selector: s1, key: {file: acme.key}}\n`);
    expect(explain(s, { from: 'sales@acme.example', envelope: undefined, login: undefined }).text).toContain('DKIM:           signed d=acme.example s=s1 (rsa-sha256)');
    const other = load(`  - {domain: other.example, selector: s1, key: {file: acme.key}}\n`);
    expect(explain(other, { from: 'sales@acme.example', envelope: undefined, login: undefined }).text).toContain('DKIM:           not signed (no dkim: entry for acme.example)');
    expect(explain(parseConfig(BASE_YAML, join(dir, 'relay.yaml'), { env: {} }), { from: 'sales@acme.example', envelope: undefined, login: undefined }).text).not.toContain('DKIM');
  });
});
