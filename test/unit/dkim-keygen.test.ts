import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dkimCommand } from '../../src/cli/dkim-keygen.js';
import { parseConfig } from '../../src/config/load.js';
import { dkimSignatureOf } from '../../src/mail/dkim-sign.js';
import { verifyDkim } from '../support/dkim-verify.js';
import { BASE_YAML } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'sendas-keygen-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await dkimCommand(args, { write: (t: string) => (out += t) }, { write: (t: string) => (err += t) });
  return { code, out, err };
}

/** The TXT strings of the printed zone-file line, joined as a resolver joins them. */
function recordOf(out: string): { name: string; text: string } {
  const line = out.split('\n').find((l) => l.includes(' IN TXT '))!;
  return { name: line.slice(0, line.indexOf('. IN TXT')), text: [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('') };
}

describe('sendas dkim keygen', () => {
  for (const type of ['rsa', 'ed25519'] as const) {
    it(`${type}: writes a 0600 key, prints a record and a dkim: entry that load and verify together`, async () => {
      const file = join(dir, `acme-${type}.key`);
      const r = await run('keygen', '--domain', 'acme.example', '--selector', `s-${type}`, '--type', type, '--out', file);
      expect(r.code).toBe(0);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(r.out).not.toContain('PRIVATE KEY');
      const { name, text } = recordOf(r.out);
      expect(name).toBe(`s-${type}._domainkey.acme.example`);
      expect(text).toMatch(new RegExp(`^v=DKIM1; k=${type}; p=`));
      // every string of the record fits a TXT string
      for (const m of r.out.matchAll(/"([^"]*)"/g)) expect(m[1]!.length).toBeLessThanOrEqual(255);

      // the printed YAML is what the relay loads; its p= is the printed one
      const yaml = r.out.slice(r.out.indexOf('dkim:\n'));
      const key = parseConfig(`${BASE_YAML}\n${yaml}`, join(dir, 'relay.yaml'), { env: {} }).dkim.get('acme.example')!;
      expect(`v=DKIM1; k=${key.keyType}; p=${key.publicKey}`).toBe(text);
      const message = Buffer.from('From: support@acme.example\r\nSubject: hi\r\n\r\nbody\r\n');
      const signed = Buffer.concat([Buffer.from(await dkimSignatureOf(key, message)), message]);
      expect(await verifyDkim(signed, { [name]: text })).toMatchObject({ ok: true });
    });
  }

  it('splits a 3072-bit RSA record into strings of 255 characters', async () => {
    const r = await run('keygen', '--domain', 'acme.example', '--selector', 'big', '--bits', '3072', '--out', join(dir, 'big.key'));
    expect(r.code).toBe(0);
    expect([...r.out.matchAll(/"([^"]*)"/g)].length).toBeGreaterThanOrEqual(3);
  });

  it('never overwrites a key file, and says what was wrong with the arguments', async () => {
    const file = join(dir, 'taken.key');
    writeFileSync(file, 'the published key');
    const r = await run('keygen', '--domain', 'acme.example', '--selector', 's1', '--out', file);
    expect(r).toMatchObject({ code: 1, err: expect.stringContaining('it exists') });
    expect(readFileSync(file, 'utf8')).toBe('the published key');
    expect((await run('keygen', '--domain', 'acme.example')).code).toBe(2);
    expect((await run('keygen', '--domain', 'acme.example', '--selector', 's1', '--bits', '512')).err).toContain('--bits must be');
    expect((await run('keygen', '--domain', 'acme.example', '--selector', 's1', '--type', 'dsa')).err).toContain('--type must be rsa or ed25519');
    expect((await run('rotate')).code).toBe(2);
  });
});
