import { describe, expect, it } from 'vitest';
import { checkDeliverability } from '../../src/deliverability/check.js';
import type { Resolve } from '../../src/deliverability/dns.js';
import { isAligned, organizationalDomain } from '../../src/deliverability/alignment.js';
import type { DomainFacts } from '../../src/deliverability/facts.js';
import { sendingDomains } from '../../src/deliverability/targets.js';
import { judgeDomain } from '../../src/deliverability/verdict.js';
import { DeliverabilityMonitor } from '../../src/deliverability/monitor.js';
import { silentLogger } from '../../src/log.js';
import { BASE_YAML, snapshotOf } from './helpers.js';

/** An in-memory zone with Node's resolver's answers and error codes (ENOTFOUND, ENODATA); CNAMEs followed. */
function zone(records: readonly [name: string, type: string, data: string][]): Resolve {
  const fail = (code: string) => Object.assign(new Error(code), { code });
  return async (name, type) => {
    let n = name.toLowerCase();
    for (let hops = 0; hops < 5; hops++) {
      const here = records.filter((r) => r[0] === n);
      const cname = here.find((r) => r[1] === 'CNAME');
      if (cname && type !== 'CNAME') {
        n = cname[2];
        continue;
      }
      const found = here.filter((r) => r[1] === type).map((r) => (type === 'TXT' ? [r[2]] : r[2]));
      if (found.length > 0) return found;
      throw fail(here.length > 0 ? 'ENODATA' : 'ENOTFOUND');
    }
    throw fail('ENOTFOUND');
  };
}

const ONE_SERVER = `
servers:
  - name: main
    host: smtp.acme.example
    username: relay@acme.example
    password: pw
channels:
  - name: support
    address: support@acme.example
`;

async function checkOne(records: readonly [string, string, string][], yaml = ONE_SERVER) {
  const report = await checkDeliverability(snapshotOf(yaml), zone(records));
  expect(report.domains).toHaveLength(1);
  return report.domains[0]!;
}

describe('the From domains the config sends as', () => {
  it('groups by domain and server, with the address that leaves after alignment', () => {
    const rows = sendingDomains(snapshotOf(BASE_YAML)).map((r) => ({ domain: r.domain, server: r.server.name, addresses: r.addresses, senders: r.senders }));
    // MAIL FROM is the same account address, so SPF is evaluated for the From domain itself
    for (const r of sendingDomains(snapshotOf(BASE_YAML))) expect(r.envelopeDomain).toBe(r.domain);
    expect(rows).toEqual([
      {
        domain: 'acme.example',
        server: 'main',
        // sales has no override: it leaves as the server's account relay@
        addresses: ['support@acme.example', 'relay@acme.example', 'alice@acme.example'],
        senders: ['channel support', 'channel sales', 'agent alice', "server main's own account (failure notices)"],
      },
      // books writes info@bücher.example, but leaves as backup's account
      { domain: 'acme.example', server: 'backup', addresses: ['backup@acme.example'], senders: ['channel books'] },
    ]);
  });
});

describe('SPF (for the MAIL FROM domain, the account address)', () => {
  const chain: [string, string, string][] = [
    ['acme.example', 'TXT', 'v=spf1 include:_spf.acme.example -all'],
    ['_spf.acme.example', 'TXT', 'v=spf1 include:_netblocks.mail.example ~all'],
    ['_netblocks.mail.example', 'TXT', 'v=spf1 ip4:192.0.2.0/24 -all'],
    ['_dmarc.acme.example', 'TXT', 'v=DMARC1; p=reject'],
  ];

  it('follows include chains to the upstream host address', async () => {
    const d = await checkOne([...chain, ['smtp.acme.example', 'A', '192.0.2.10']]);
    expect(d.result).toBe('pass');
    expect(d.spf).toMatchObject({ result: 'pass', aligned: true });
    expect(d.spf.detail).toContain('192.0.2.10');
  });

  it('-all: an upstream outside the policy fails, and the fix adds its address to the record', async () => {
    const d = await checkOne([...chain, ['smtp.acme.example', 'A', '198.51.100.7']]);
    expect(d.result).toBe('fail');
    expect(d.spf.result).toBe('fail');
    expect(d.problems.join('\n')).toContain('does not cover 198.51.100.7');
    expect(d.problems.join('\n')).toMatch(/p=reject.*receivers refuse the mail/);
    expect(d.fixes.map((f) => f.record)).toContain('acme.example. TXT "v=spf1 ip4:198.51.100.7 include:_spf.acme.example -all"');
  });

  it('~all is a softfail, which DMARC does not count as a pass', async () => {
    const d = await checkOne([
      ['acme.example', 'TXT', 'v=spf1 ip4:203.0.113.1 ~all'],
      ['_dmarc.acme.example', 'TXT', 'v=DMARC1; p=quarantine'],
      ['smtp.acme.example', 'A', '192.0.2.10'],
      ['smtp.acme.example', 'AAAA', '2001:db8::10'],
    ]);
    expect(d.spf.result).toBe('softfail');
    expect(d.spf.detail).toContain('~all only soft-fails it');
    expect(d.result).toBe('fail');
    expect(d.problems.join('\n')).toContain('receivers put the mail in spam');
    // both addresses of the host are checked, and both go into the fix
    expect(d.fixes.map((f) => f.record)).toContain('acme.example. TXT "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 ip4:203.0.113.1 ~all"');
  });

  it('no SPF record and p=reject: the failure and the records to add', async () => {
    const d = await checkOne([
      ['_dmarc.acme.example', 'TXT', 'v=DMARC1; p=reject; rua=mailto:d@acme.example'],
      ['smtp.acme.example', 'A', '192.0.2.10'],
    ]);
    expect(d).toMatchObject({ result: 'fail', spf: { result: 'none' }, dkim: { result: 'not-known' }, dmarc: { policy: 'reject' } });
    expect(d.problems[0]).toBe('SPF: acme.example publishes no SPF record, so nothing authorizes smtp.acme.example 192.0.2.10 (server main\'s upstream)');
    expect(d.fixes[0]!.record).toBe('acme.example. TXT "v=spf1 ip4:192.0.2.10 -all"');
  });

  it('one domain sent through two servers: one SPF record that covers both', async () => {
    const report = await checkDeliverability(
      snapshotOf(BASE_YAML),
      zone([
        ['acme.example', 'TXT', 'v=spf1 ip4:203.0.113.1 -all'],
        ['smtp.acme.example', 'A', '192.0.2.10'],
        ['smtp2.acme.example', 'A', '192.0.2.11'],
      ]),
    );
    expect(report.domains.map((d) => [d.server, d.result])).toEqual([
      ['main', 'fail'],
      ['backup', 'fail'],
    ]);
    for (const d of report.domains) expect(d.fixes[0]!.record).toBe('acme.example. TXT "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 ip4:203.0.113.1 -all"');
  });

  it('an upstream host without an address is a lookup problem, not a pass', async () => {
    const d = await checkOne([['_dmarc.acme.example', 'TXT', 'v=DMARC1; p=reject']]);
    expect(d.result).toBe('unknown');
    expect(d.spf.detail).toBe('the upstream host smtp.acme.example of server main has no A or AAAA record');
  });
});

describe('DMARC policy', () => {
  const noAuth: [string, string, string][] = [
    ['acme.example', 'TXT', 'v=spf1 -all'],
    ['smtp.acme.example', 'A', '192.0.2.10'],
  ];

  it('p=none still fails DMARC, and says what receivers do with it', async () => {
    const d = await checkOne([...noAuth, ['_dmarc.acme.example', 'TXT', 'v=DMARC1; p=none']]);
    expect(d.result).toBe('fail');
    expect(d.dmarc.policy).toBe('none');
    expect(d.problems.at(-1)).toContain('p=none lets receivers deliver it');
  });

  it('no DMARC record: the record to add, with p=none to start', async () => {
    const d = await checkOne([...noAuth.slice(1), ['acme.example', 'TXT', 'v=spf1 a:smtp.acme.example -all']]);
    expect(d.result).toBe('pass');
    expect(d.dmarc.policy).toBeUndefined();
    expect(d.fixes.map((f) => f.record)).toEqual(['_dmarc.acme.example. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@acme.example"']);
    expect(d.notes.join('\n')).toContain('only SPF authenticates this mail');
  });

  it("a subdomain without its own record gets the organizational domain's sp=", async () => {
    const yaml = ONE_SERVER.replace('relay@acme.example', 'relay@mail.acme.example').replace('support@acme.example', 'support@mail.acme.example');
    const d = await checkOne(
      [
        ['mail.acme.example', 'TXT', 'v=spf1 -all'],
        ['_dmarc.acme.example', 'TXT', 'v=DMARC1; p=none; sp=reject'],
        ['smtp.acme.example', 'A', '192.0.2.10'],
      ],
      yaml,
    );
    expect(d.domain).toBe('mail.acme.example');
    expect(d.dmarc).toMatchObject({ policy: 'reject', at: '_dmarc.acme.example' });
    expect(d.dmarc.detail).toContain('sp=reject of the organizational domain acme.example');
    expect(d.result).toBe('fail');
  });

  it("the From domain's own record wins over the organizational domain's", async () => {
    const yaml = ONE_SERVER.replace('relay@acme.example', 'relay@mail.acme.example').replace('support@acme.example', 'support@mail.acme.example');
    const d = await checkOne(
      [
        ['mail.acme.example', 'TXT', 'v=spf1 -all'],
        ['_dmarc.mail.acme.example', 'TXT', 'v=DMARC1; p=quarantine; sp=reject'],
        ['_dmarc.acme.example', 'TXT', 'v=DMARC1; p=reject'],
        ['smtp.acme.example', 'A', '192.0.2.10'],
      ],
      yaml,
    );
    expect(d.dmarc).toMatchObject({ policy: 'quarantine', at: '_dmarc.mail.acme.example' });
  });
});

describe('alignment', () => {
  it('relaxed compares organizational domains (Public Suffix List), strict the names', () => {
    expect(organizationalDomain('mail.acme.example')).toBe('acme.example');
    expect(organizationalDomain('a.b.example.co.uk')).toBe('example.co.uk');
    expect(isAligned('mail.acme.example', 'acme.example', 'relaxed')).toBe(true);
    expect(isAligned('mail.acme.example', 'acme.example', 'strict')).toBe(false);
    expect(isAligned('acme.example', 'ACME.example.', 'strict')).toBe(true);
    // two registrable domains under the same public suffix are not aligned
    expect(isAligned('acme.co.uk', 'other.co.uk', 'relaxed')).toBe(false);
  });

  const facts = (over: Partial<DomainFacts> = {}): DomainFacts => ({
    domain: 'mail.acme.example',
    server: 'main',
    provider: undefined,
    addresses: ['support@mail.acme.example'],
    senders: ['channel support'],
    spf: { domain: 'mail.acme.example', records: ['v=spf1 -all'], origin: 'smtp.acme.example 192.0.2.10', results: [{ ip: '192.0.2.10', result: 'fail' }], authorize: ['ip4:192.0.2.10'] },
    dkim: { selectors: [{ selector: 's1', signingDomain: 'acme.example', signer: 'sendas', configuredKey: 'AAAA', published: { kind: 'key', key: 'AAAA', record: 'v=DKIM1; p=AAAA' } }] },
    dmarc: { kind: 'record', at: 'acme.example', record: 'v=DMARC1; p=reject', fromOrgDomain: true, p: 'reject', sp: undefined, adkim: undefined, aspf: undefined, pct: undefined },
    ...over,
  });

  it('DKIM d=acme.example aligns with From mail.acme.example when relaxed, not with adkim=s', () => {
    expect(judgeDomain(facts())).toMatchObject({ result: 'pass', dkim: { result: 'pass', aligned: true } });
    const strict = judgeDomain(facts({ dmarc: { kind: 'record', at: 'acme.example', record: 'v=DMARC1; p=reject; adkim=s', fromOrgDomain: true, p: 'reject', sp: undefined, adkim: 's', aspf: undefined, pct: undefined } }));
    expect(strict).toMatchObject({ result: 'fail', dkim: { result: 'pass', aligned: false }, dmarc: { adkim: 'strict' } });
    expect(strict.dkim.detail).toContain('d=acme.example, which is not the same as mail.acme.example (adkim strict)');
  });

  it('SPF that passes for another envelope domain is not aligned under aspf=s', () => {
    const d = judgeDomain(
      facts({
        spf: { domain: 'acme.example', records: ['v=spf1 ip4:192.0.2.10 -all'], origin: 'smtp.acme.example 192.0.2.10', results: [{ ip: '192.0.2.10', result: 'pass' }], authorize: [] },
        dkim: { selectors: [] },
        dmarc: { kind: 'record', at: 'acme.example', record: 'v=DMARC1; p=reject; aspf=s', fromOrgDomain: true, p: 'reject', sp: undefined, adkim: undefined, aspf: 's', pct: undefined },
      }),
    );
    expect(d.result).toBe('fail');
    expect(d.spf).toMatchObject({ result: 'pass', aligned: false });
  });

  it('a key that differs is reported even when SPF carries DMARC', () => {
    const d = judgeDomain(
      facts({
        spf: { domain: 'mail.acme.example', records: ['v=spf1 ip4:192.0.2.10 -all'], origin: 'smtp.acme.example 192.0.2.10', results: [{ ip: '192.0.2.10', result: 'pass' }], authorize: [] },
        dkim: { selectors: [{ selector: 's1', signingDomain: 'mail.acme.example', signer: 'sendas', configuredKey: 'BBBB', configuredKeyType: 'ed25519', published: { kind: 'key', key: 'AAAA', record: 'v=DKIM1; p=AAAA' } }] },
      }),
    );
    expect(d.result).toBe('pass');
    expect(d.dkim.result).toBe('mismatch');
    expect(d.problems).toEqual([expect.stringContaining('DKIM: the key published at s1._domainkey.mail.acme.example differs from the configured key')]);
    expect(d.fixes.map((f) => f.record)).toContain('s1._domainkey.mail.acme.example. TXT "v=DKIM1; k=ed25519; p=BBBB"');
  });

  it('a published key that differs from the configured one is reported, with the record to publish', () => {
    const d = judgeDomain(facts({ dkim: { selectors: [{ selector: 's1', signingDomain: 'mail.acme.example', signer: 'sendas', configuredKey: 'BBBB', configuredKeyType: 'rsa', published: { kind: 'key', key: 'AAAA', record: 'v=DKIM1; p=AAAA' } }] } }));
    expect(d.result).toBe('fail');
    expect(d.dkim.result).toBe('mismatch');
    expect(d.problems.join('\n')).toContain('the key published at s1._domainkey.mail.acme.example differs from the configured key');
    expect(d.fixes.map((f) => f.record)).toContain('s1._domainkey.mail.acme.example. TXT "v=DKIM1; k=rsa; p=BBBB"');
  });
});

describe('provider presets', () => {
  const M365 = `
servers:
  - name: m365
    preset: office365
    username: support@acme.example
    oauth:
      tenant: contoso.onmicrosoft.com
      client_id: app
      client_secret: s
`;
  const microsoft: [string, string, string][] = [
    ['spf.protection.outlook.com', 'TXT', 'v=spf1 include:spfa.protection.outlook.com -all'],
    ['spfa.protection.outlook.com', 'TXT', 'v=spf1 ip4:40.107.0.0/16 -all'],
    ['_dmarc.acme.example', 'TXT', 'v=DMARC1; p=reject'],
  ];

  it("Microsoft 365: SPF checked with an address of Microsoft's own ranges, DKIM at selector1/selector2 CNAMEs", async () => {
    const d = await checkOne(
      [
        ...microsoft,
        ['acme.example', 'TXT', 'v=spf1 include:spf.protection.outlook.com -all'],
        ['selector1._domainkey.acme.example', 'CNAME', 'selector1-acme-example._domainkey.contoso.onmicrosoft.com'],
        ['selector1-acme-example._domainkey.contoso.onmicrosoft.com', 'TXT', 'v=DKIM1; k=rsa; p=MIIBIjAN'],
      ],
      M365,
    );
    expect(d).toMatchObject({ result: 'pass', spf: { result: 'pass', aligned: true }, dkim: { result: 'pass', aligned: true } });
    expect(d.spf.detail).toContain("Microsoft 365's outbound servers (spf.protection.outlook.com; checked with 40.107.0.0)");
    expect(d.notes.join('\n')).toContain('selector2._domainkey.acme.example is not published');
  });

  it('Microsoft 365 without the include and the CNAMEs: both records to add, the CNAME into the tenant', async () => {
    const d = await checkOne([...microsoft, ['acme.example', 'TXT', 'v=spf1 ip4:192.0.2.1 -all']], M365);
    expect(d.result).toBe('fail');
    expect(d.fixes.map((f) => f.record)).toEqual([
      'acme.example. TXT "v=spf1 include:spf.protection.outlook.com ip4:192.0.2.1 -all"',
      'selector1._domainkey.acme.example. CNAME selector1-acme-example._domainkey.contoso.onmicrosoft.com.',
      'selector2._domainkey.acme.example. CNAME selector2-acme-example._domainkey.contoso.onmicrosoft.com.',
    ]);
  });

  it('Gmail: the google selector', async () => {
    const yaml = `
servers:
  - name: g
    preset: gmail
    username: support@acme.example
    oauth: {client_id: app, client_secret: s, refresh_token: r}
`;
    const d = await checkOne(
      [
        ['_spf.google.com', 'TXT', 'v=spf1 include:_netblocks.google.com ~all'],
        ['_netblocks.google.com', 'TXT', 'v=spf1 ip4:209.85.128.0/17 ~all'],
        ['acme.example', 'TXT', 'v=spf1 include:_spf.google.com ~all'],
        ['google._domainkey.acme.example', 'TXT', 'v=DKIM1; k=rsa; p=MIIB'],
      ],
      yaml,
    );
    expect(d).toMatchObject({ result: 'pass', dkim: { result: 'pass' } });
    expect(d.dkim.detail).toBe('google._domainkey.acme.example publishes the key Google signs with (d=acme.example)');
  });
});

describe('deliverability: in the config', () => {
  it('defaults to a check every 6 h with the system resolvers; dns_servers must be HOST[:PORT]', () => {
    expect(snapshotOf(ONE_SERVER).deliverability).toEqual({ check: true, intervalMs: 21_600_000, dnsServers: [] });
    expect(snapshotOf(ONE_SERVER, 'deliverability: {check: false, interval: 1h, dns_servers: [127.0.0.1:5353, "[::1]:53"]}\n').deliverability).toEqual({
      check: false,
      intervalMs: 3_600_000,
      dnsServers: ['127.0.0.1:5353', '[::1]:53'],
    });
    for (const bad of ['udp://1.1.1.1', 'dns.example:53', '127.0.0.1:99999']) {
      expect(() => snapshotOf(ONE_SERVER, `deliverability: {dns_servers: ["${bad}"]}\n`), bad).toThrow(/deliverability\.dns_servers\[0\].*must be an IP address with an optional port/);
    }
    expect(snapshotOf(ONE_SERVER, 'deliverability: {dns_servers: ["2001:db8::53"]}\n').deliverability.dnsServers).toEqual(['2001:db8::53']);
  });
});

describe("the relay's background check", () => {
  it('with check: false it looks nothing up and /status says off', () => {
    const monitor = new DeliverabilityMonitor({ getSnapshot: () => snapshotOf(ONE_SERVER, 'deliverability: {check: false}\n'), logger: silentLogger() });
    monitor.check();
    expect(monitor.status()).toEqual({ state: 'off' });
    monitor.stop();
  });

  it('is pending until the first check is in, and a stopped monitor never checks again', () => {
    // a resolver nobody answers: 192.0.2.1 (TEST-NET-1) is never routed
    const monitor = new DeliverabilityMonitor({ getSnapshot: () => snapshotOf(ONE_SERVER, 'deliverability: {dns_servers: [192.0.2.1:53]}\n'), logger: silentLogger() });
    monitor.check();
    expect(monitor.status()).toEqual({ state: 'pending' });
    monitor.stop();
    monitor.check();
    expect(monitor.status()).toEqual({ state: 'pending' });
  });
});

describe('DNS trouble', () => {
  it('a resolver that cannot be reached gives "could not look up", never a pass or a throw', async () => {
    const down: Resolve = async (name) => {
      throw Object.assign(new Error(`queryTxt ECONNREFUSED ${name}`), { code: 'ECONNREFUSED' });
    };
    const report = await checkDeliverability(snapshotOf(ONE_SERVER), down);
    expect(report.result).toBe('unknown');
    expect(report.domains[0]!.spf.detail).toBe('could not look up TXT acme.example: ECONNREFUSED');
  });
});
