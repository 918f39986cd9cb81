import { generateKeyPairSync } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dkimKeyFacts, dkimTxtRecord, type DkimKeyFacts } from '../../src/config/dkim.js';
import { startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { swaks } from '../support/swaks.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';

/**
 * Memory flat in message size with DKIM on, measured on the real process (the built CLI):
 * passthrough, where a large signed message is spooled while it is hashed. A relay that held the
 * message to sign it would raise the peak RSS by at least the message's 50 MB. Streaming alone
 * raises it by about 37 MB (chunk buffers the garbage collector has not taken back yet; the same
 * message unsigned measured 37 MB too, as in process.test.ts). The signature is checked with
 * mailauth's verifier (python3-dkim checks the same paths with 10 MB in dkim.test.ts, faster).
 */
describe('DKIM signing of a 50 MB message (real process)', () => {
  let upstream: TestUpstream;
  let relay: RelayProcess;
  const dir = mkdtempSync(join(tmpdir(), 'sendas-dkim-proc-'));
  const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const record = dkimTxtRecord(dkimKeyFacts(pem) as DkimKeyFacts);

  beforeAll(async () => {
    upstream = await startTestUpstream({
      accounts: [
        { username: 'support@acme.example', password: 'support-secret-2' },
      ],
      requireSenderMatchesLogin: true,
    });
    writeFileSync(join(dir, 'acme.key'), pem, { mode: 0o600 });
    writeFileSync(
      join(dir, 'relay.yaml'),
      `delivery: passthrough
http: false
listen: {host: 127.0.0.1, port: 0, max_message_size: 60MB}
state_dir: ${join(dir, 'state')}
servers:
  - name: main
    host: 127.0.0.1
    port: ${upstream.port}
    security: none
    username: relay@acme.example
    password: server-secret-1
channels:
  - name: support
    address: support@acme.example
    override:
      password: support-secret-2
dkim:
  - {domain: acme.example, selector: s1, key: {file: acme.key}}
`,
    );
    relay = await startRelayProcess(join(dir, 'relay.yaml'));
  });

  afterAll(async () => {
    await relay?.stop();
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is spooled, signed and sent without the message in memory', async () => {
    const file = join(dir, 'big.eml');
    const line = `${'0123456789abcdef'.repeat(4)}\r\n`;
    const lines = Math.ceil((50 * 1024 * 1024) / line.length);
    await new Promise<void>((resolve, reject) => {
      const out = createWriteStream(file);
      out.on('error', reject);
      out.write('To: c@example.net\r\nSubject: big\r\n\r\n');
      let i = 0;
      const write = () => {
        let ok = true;
        while (i < lines && ok) {
          ok = out.write(line.repeat(1000));
          i += 1000;
        }
        if (i < lines) out.once('drain', write);
        else out.end(resolve);
      };
      write();
    });
    // one small signed message first: what signing loads is in the baseline
    expect((await swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to: 'c@example.net', data: 'From: support@acme.example\r\n\r\nhi\r\n' })).finalCode).toBe(250);
    await upstream.nextMessage();
    const atStart = relay.peakRss();
    // no From in the file: the envelope sender's identity sends it, and the From is added
    expect((await swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to: 'c@example.net', dataFile: file, timeoutMs: 60_000 })).finalCode).toBe(250);
    const got = await upstream.nextMessage(30_000);
    expect(got.raw.length).toBeGreaterThan(50 * 1024 * 1024);
    const afterSigned = relay.peakRss();
    expect(afterSigned - atStart).toBeLessThan(48 * 1024 * 1024);

    const { dkimVerify } = createRequire(import.meta.url)('mailauth/lib/dkim/verify.js') as {
      dkimVerify: (m: Buffer, o: { resolver: (name: string) => Promise<string[][]> }) => Promise<{ results: { status: { result: string }; signingDomain: string }[] }>;
    };
    const verdict = await dkimVerify(got.raw, { resolver: async (name) => (name === 's1._domainkey.acme.example' ? [[record]] : []) });
    expect(verdict.results.map((x) => [x.signingDomain, x.status.result])).toEqual([['acme.example', 'pass']]);
  }, 120_000);
});
