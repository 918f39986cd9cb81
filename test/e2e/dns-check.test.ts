import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compiledCli, runProcess } from '../support/cli.js';
import { startDnsServer, type TestDnsServer, type ZoneRecord } from '../support/dns-server.js';
import { startRelay, type RunningRelay } from './harness.js';

/** An RSA key pair: the PEM private key for `dkim:` and the p= its DNS record carries. */
function rsaKey(bits: number): { pem: string; p: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return { pem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), p: publicKey.export({ type: 'spki', format: 'der' }).toString('base64') };
}

// 3072 bits: the key's TXT record is too long for a UDP answer, so the resolver must ask over TCP
const good = rsaKey(3072);
const configured = rsaKey(2048);
const other = rsaKey(2048);

/**
 * good.example: SPF covers its upstream host (mx.good.example, 127.0.0.2 by this zone) and the
 * configured DKIM key is published. bad.example: no SPF, p=reject. wrongkey.example: SPF covers
 * the upstream, but its selector publishes another key than the configured one.
 */
const ZONE: ZoneRecord[] = [
  { name: 'mx.good.example', type: 'A', data: '127.0.0.2' },
  { name: 'mx.bad.example', type: 'A', data: '127.0.0.3' },
  { name: 'good.example', type: 'TXT', data: 'v=spf1 include:_spf.good.example -all' },
  { name: '_spf.good.example', type: 'TXT', data: 'v=spf1 a:mx.good.example -all' },
  { name: 's1._domainkey.good.example', type: 'TXT', data: `v=DKIM1; k=rsa; p=${good.p}` },
  { name: '_dmarc.good.example', type: 'TXT', data: 'v=DMARC1; p=reject; rua=mailto:dmarc@good.example' },
  { name: '_dmarc.bad.example', type: 'TXT', data: 'v=DMARC1; p=reject' },
  { name: 'wrongkey.example', type: 'TXT', data: 'v=spf1 ip4:127.0.0.2 -all' },
  { name: 's1._domainkey.wrongkey.example', type: 'TXT', data: `v=DKIM1; k=rsa; p=${other.p}` },
  { name: '_dmarc.wrongkey.example', type: 'TXT', data: 'v=DMARC1; p=quarantine' },
];

function config(dir: string, extra = ''): string {
  writeFileSync(join(dir, 'good.key'), good.pem);
  writeFileSync(join(dir, 'wrongkey.key'), configured.pem);
  return `delivery: passthrough
http: false
listen: {host: 127.0.0.1, port: 0}
servers:
  - name: main
    default: true
    host: mx.good.example
    port: 2525
    security: none
    auth: none
    address: relay@good.example
  - name: other
    host: mx.bad.example
    port: 2525
    security: none
    auth: none
    address: relay@bad.example
  - name: keys
    host: mx.good.example
    port: 2525
    security: none
    auth: none
    address: relay@wrongkey.example
channels:
  - name: support
    address: support@good.example
  - name: billing
    address: billing@bad.example
    server: other
  - name: info
    address: info@wrongkey.example
    server: keys
dkim:
  - {domain: good.example, selector: s1, key: {file: ${join(dir, 'good.key')}}}
  - {domain: wrongkey.example, selector: s1, key: {file: ${join(dir, 'wrongkey.key')}}}
${extra}`;
}

interface StatusDomain {
  domain: string;
  server: string;
  result: string;
  problems: string[];
  fixes: { record: string }[];
}

describe('sendas check --dns (the compiled CLI, against a DNS server on loopback)', () => {
  let dns: TestDnsServer;
  let cli: string;
  let dir: string;
  let file: string;

  beforeAll(async () => {
    dns = await startDnsServer(ZONE);
    dir = mkdtempSync(join(tmpdir(), 'sendas-dns-'));
    file = join(dir, 'relay.yaml');
    writeFileSync(file, config(dir));
    cli = await compiledCli(mkdtempSync(join(tmpdir(), 'sendas-dns-cli-')));
  }, 120_000);

  afterAll(async () => {
    await dns?.close();
  });

  const check = (...args: string[]) => runProcess(process.execPath, [cli, 'check', '--config', file, '--dns', ...args], { cwd: dir, env: { PATH: process.env.PATH } });

  it('passes the domain whose SPF covers the upstream and whose key is published; fails the one without SPF under p=reject, with the record to add; exit 4', async () => {
    const run = await check('--dns-server', dns.address);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(4);
    const out = run.stdout;
    const block = (domain: string) => out.split('\n\n').find((b) => b.includes(`  ${domain} via server`))!;

    expect(block('good.example')).toMatch(/^PASS {2}good\.example via server main {2}\(From relay@good\.example; channel support/);
    expect(block('good.example')).toContain('SPF    pass, aligned: good.example authorizes mx.good.example 127.0.0.2');
    expect(block('good.example')).toContain('DKIM   pass, aligned: s1._domainkey.good.example publishes the key sendas signs with (d=good.example)');

    const bad = block('bad.example');
    expect(bad).toMatch(/^FAIL {2}bad\.example via server other/);
    expect(bad).toContain('SPF    none: bad.example publishes no SPF record');
    expect(bad).toContain('why: DMARC: _dmarc.bad.example says p=reject and neither SPF nor DKIM passes aligned with bad.example: receivers refuse the mail');
    expect(bad).toContain('bad.example. TXT "v=spf1 ip4:127.0.0.3 -all"');

    const keys = block('wrongkey.example');
    expect(keys).toContain('DKIM   mismatch');
    expect(keys).toContain('the key published at s1._domainkey.wrongkey.example differs from the configured key');
    expect(keys).toContain(`s1._domainkey.wrongkey.example. TXT "v=DKIM1; k=rsa; p=${configured.p.slice(0, 200)}`);
    expect(out.trim().split('\n').at(-1)).toBe('1 would fail DMARC, 2 pass');

    // the 3072-bit key came over TCP after a truncated UDP answer
    expect(dns.queries).toContain('TXT s1._domainkey.good.example over tcp');
    // no secret: no private key in the output
    expect(out).not.toContain('PRIVATE KEY');
  });

  it('--json gives the same verdicts as data', async () => {
    const run = await check('--dns-server', dns.address, '--json');
    expect(run.code).toBe(4);
    const report = JSON.parse(run.stdout) as { result: string; domains: StatusDomain[] };
    expect(report.result).toBe('fail');
    expect(report.domains.map((d) => [d.domain, d.server, d.result])).toEqual([
      ['good.example', 'main', 'pass'],
      ['bad.example', 'other', 'fail'],
      ['wrongkey.example', 'keys', 'pass'],
    ]);
    expect(report.domains[1]!.fixes.map((f) => f.record)).toContain('bad.example. TXT "v=spf1 ip4:127.0.0.3 -all"');
  });

  it('a DNS server that does not answer: "could not look up", exit 5, nothing passes by accident', async () => {
    const closed = await startDnsServer([]);
    const address = closed.address;
    await closed.close();
    const run = await check('--dns-server', address);
    expect(run.code).toBe(5);
    expect(run.stdout).toMatch(/UNKNOWN {2}good\.example via server main/);
    expect(run.stdout).toContain('could not look up');
  });

  it('a --dns-server that is not an address is a usage error (exit 2)', async () => {
    const run = await check('--dns-server', 'dns.example:53');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--dns-server dns.example:53 is not an IP address with an optional port');
  });
});

describe('the relay checks in the background and shows it in /status', () => {
  let dns: TestDnsServer;
  let relay: RunningRelay;
  let dir: string;

  beforeAll(async () => {
    dns = await startDnsServer(ZONE);
    dir = mkdtempSync(join(tmpdir(), 'sendas-dns-relay-'));
    relay = await startRelay(config(dir, `deliverability:\n  dns_servers: [${dns.address}]\n`), { ops: true });
  });

  afterAll(async () => {
    await relay?.stop();
    await dns?.close();
  });

  async function deliverability(until: (d: { state: string; checkedAt?: string }) => boolean): Promise<{ state: string; result?: string; checkedAt?: string; domains?: StatusDomain[] }> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const status = JSON.parse((await relay.ops('/status')).text) as { deliverability: { state: string; checkedAt?: string } };
      if (until(status.deliverability)) return status.deliverability;
      if (Date.now() > deadline) throw new Error(`deliverability still ${JSON.stringify(status.deliverability)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('at start: the failing domain in /status and a warn line in the log', async () => {
    const d = await deliverability((s) => s.state === 'checked');
    expect(d.result).toBe('fail');
    expect(d.domains!.find((x) => x.domain === 'bad.example')).toMatchObject({ server: 'other', result: 'fail' });
    const line = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('deliverability: mail from relay@bad.example'));
    expect(line).toMatchObject({ level: 40, domain: 'bad.example', server: 'other' });
    expect(line.msg).toContain('through server other would fail DMARC');
  });

  it('after a config reload it checks again: the SPF record added in the meantime makes it pass', async () => {
    const first = await deliverability((s) => s.state === 'checked');
    dns.setZone([...ZONE, { name: 'bad.example', type: 'TXT', data: 'v=spf1 ip4:127.0.0.3 -all' }]);
    writeFileSync(relay.configFile, `${config(dir, `deliverability:\n  dns_servers: [${dns.address}]\n`)}# reloaded\n`);
    relay.reload();
    const next = await deliverability((s) => s.state === 'checked' && s.checkedAt !== first.checkedAt);
    expect(next.domains!.find((x) => x.domain === 'bad.example')!.result).toBe('pass');
    expect(next.result).toBe('pass');
  });
});
