import { spf } from 'mailauth/lib/spf/index.js';
import { organizationalDomain } from './alignment.js';
import getDmarcRecord from 'mailauth/lib/dmarc/get-dmarc-record.js';
import type { ConfigSnapshot, ServerConfig } from '../config/types.js';
import { hostAddresses, isNoRecord, lookupFailure, txtRecords, type Resolve } from './dns.js';
import type { DkimSelectorFacts, DmarcFacts, DomainFacts, PublishedKey, SpfFacts } from './facts.js';
import { providerOf, type Provider, type SendingDomain } from './targets.js';

/** Where each provider publishes the addresses it sends from (what a customer's SPF includes). */
export const PROVIDER_SPF: Readonly<Record<Provider, string>> = {
  // https://learn.microsoft.com/en-us/defender-office-365/email-authentication-spf-configure
  microsoft365: 'spf.protection.outlook.com',
  // https://support.google.com/a/answer/10685031
  google: '_spf.google.com',
};

/** The selectors each provider signs custom domains with. */
const PROVIDER_SELECTORS: Readonly<Record<Provider, readonly string[]>> = {
  // https://learn.microsoft.com/en-us/defender-office-365/email-authentication-dkim-configure
  microsoft365: ['selector1', 'selector2'],
  // https://support.google.com/a/answer/174124 (the default prefix "google")
  google: ['google'],
};

const PROVIDER_NAMES: Readonly<Record<Provider, string>> = { microsoft365: 'Microsoft 365', google: 'Google' };

/** Looks up everything a receiver's DMARC check of this row would look at. Never throws for DNS trouble: it becomes a fact. */
export async function lookupDomain(snapshot: ConfigSnapshot, row: SendingDomain, resolve: Resolve): Promise<DomainFacts> {
  const provider = providerOf(row.server);
  const [spfFacts, dkim, dmarc] = await Promise.all([lookupSpf(row, provider, resolve), lookupDkim(snapshot, row, provider, resolve), lookupDmarc(row.domain, resolve)]);
  return { domain: row.domain, server: row.server.name, provider, addresses: row.addresses, senders: row.senders, spf: spfFacts, dkim: { selectors: dkim }, dmarc };
}

async function lookupSpf(row: SendingDomain, provider: Provider | undefined, resolve: Resolve): Promise<SpfFacts> {
  const domain = row.envelopeDomain;
  let records: string[] = [];
  try {
    records = (await txtRecords(resolve, domain)).filter((r) => /^v=spf1(\s|$)/i.test(r.trim()));
  } catch (err) {
    return { domain, records, origin: '', results: [], authorize: [], error: lookupFailure(domain, 'TXT', err) };
  }
  const origin = await sendingAddresses(row.server, provider, resolve);
  if ('error' in origin) return { domain, records, origin: origin.origin, results: [], authorize: origin.authorize, error: origin.error };
  const results = await Promise.all(
    origin.ips.map(async (ip) => {
      const r = await spf({ sender: row.addresses[0]!, ip, helo: row.server.host || domain, mta: 'sendas check', resolver: resolve });
      return { ip, result: r.status.result, ...(r.status.comment ? { comment: r.status.comment.replace(/^sendas check: /, '') } : {}) };
    }),
  );
  return { domain, records, origin: origin.origin, results, authorize: origin.authorize };
}

/**
 * The addresses a receiver sees the mail come from. A provider's submission host is not where
 * its mail leaves from, so for Microsoft 365 and Google the SPF check uses an address from the
 * provider's own published ranges; any other server is taken to deliver the mail itself from the
 * addresses of its host (and of its alternate).
 */
async function sendingAddresses(server: ServerConfig, provider: Provider | undefined, resolve: Resolve): Promise<{ ips: string[]; origin: string; authorize: string[] } | { error: string; origin: string; authorize: string[] }> {
  if (provider) {
    const include = PROVIDER_SPF[provider];
    const origin = `${PROVIDER_NAMES[provider]}'s outbound servers (${include})`;
    try {
      const ip = await firstAddress(resolve, include, 0);
      if (!ip) return { error: `${include} lists no address to check with`, origin, authorize: [`include:${include}`] };
      return { ips: [ip], origin: `${PROVIDER_NAMES[provider]}'s outbound servers (${include}; checked with ${ip})`, authorize: [`include:${include}`] };
    } catch (err) {
      return { error: lookupFailure(include, 'TXT', err), origin, authorize: [`include:${include}`] };
    }
  }
  const hosts = [server.host, ...(server.alternate ? [server.alternate.host] : [])].filter((h) => h);
  const ips: string[] = [];
  const described: string[] = [];
  for (const host of hosts) {
    let found: string[];
    try {
      found = await hostAddresses(resolve, host);
    } catch (err) {
      return { error: lookupFailure(host, 'A', err), origin: host, authorize: [] };
    }
    if (found.length === 0) return { error: `the upstream host ${host} of server ${server.name} has no A or AAAA record`, origin: host, authorize: [] };
    ips.push(...found.filter((ip) => !ips.includes(ip)));
    described.push(`${host} ${found.join(' ')}`);
  }
  const origin = `${described.join(', ')} (server ${server.name}'s upstream)`;
  return { ips, origin, authorize: ips.map((ip) => (ip.includes(':') ? `ip6:${ip}` : `ip4:${ip}`)) };
}

/** The first ip4 (or ip6) address an SPF record authorizes, following include and redirect. */
async function firstAddress(resolve: Resolve, domain: string, depth: number): Promise<string | undefined> {
  if (depth > 5) return undefined;
  const record = (await txtRecords(resolve, domain)).find((r) => /^v=spf1(\s|$)/i.test(r.trim()));
  if (!record) return undefined;
  const terms = record.trim().split(/\s+/).slice(1);
  for (const term of terms) {
    const ip = /^\+?ip[46]:([^/]+)/i.exec(term);
    if (ip) return ip[1];
  }
  for (const term of terms) {
    const next = /^(?:\+?include:|redirect=)(.+)$/i.exec(term);
    if (next) {
      const found = await firstAddress(resolve, next[1]!, depth + 1);
      if (found) return found;
    }
  }
  return undefined;
}

async function lookupDkim(snapshot: ConfigSnapshot, row: SendingDomain, provider: Provider | undefined, resolve: Resolve): Promise<DkimSelectorFacts[]> {
  const configured = snapshot.dkim.get(row.domain);
  if (configured) {
    // sendas signs this domain itself: the configured selector is what receivers verify
    const published = await publishedKey(resolve, `${configured.selector}._domainkey.${configured.domain}`);
    return [{ selector: configured.selector, signingDomain: configured.domain, signer: 'sendas', configuredKey: configured.publicKey, configuredKeyType: configured.keyType, published }];
  }
  if (!provider) return [];
  return Promise.all(
    PROVIDER_SELECTORS[provider].map(async (selector): Promise<DkimSelectorFacts> => {
      const name = `${selector}._domainkey.${row.domain}`;
      const cname = provider === 'microsoft365' ? await cnameOf(resolve, name) : undefined;
      const tenant = row.server.oauth?.tenant;
      const cnameTarget = tenant && /\.onmicrosoft\.com$/i.test(tenant) ? `${selector}-${row.domain.replace(/\./g, '-')}._domainkey.${tenant.toLowerCase()}` : undefined;
      return { selector, signingDomain: row.domain, signer: provider, published: await publishedKey(resolve, name), ...(cname ? { cname } : {}), ...(cnameTarget ? { cnameTarget } : {}) };
    }),
  );
}

async function cnameOf(resolve: Resolve, name: string): Promise<string | undefined> {
  try {
    return ((await resolve(name, 'CNAME')) as string[])[0];
  } catch {
    // no CNAME (or it can't be read): the TXT lookup says the rest
    return undefined;
  }
}

/** The key at a selector's name (a CNAME is followed by the resolver). */
async function publishedKey(resolve: Resolve, name: string): Promise<PublishedKey> {
  let records: string[];
  try {
    records = await txtRecords(resolve, name);
  } catch (err) {
    return { kind: 'error', error: lookupFailure(name, 'TXT', err) };
  }
  const record = records.find((r) => /(^|;)\s*p=/i.test(r));
  if (!record) return { kind: 'none' };
  const p = /(?:^|;)\s*p=([^;]*)/i.exec(record)![1]!.replace(/\s+/g, '');
  return p ? { kind: 'key', key: p, record } : { kind: 'revoked', record };
}

async function lookupDmarc(domain: string, resolve: Resolve): Promise<DmarcFacts> {
  try {
    const found = await getDmarcRecord(domain, resolve);
    if (!found) return { kind: 'none' };
    const text = (v: unknown) => (typeof v === 'string' ? v.trim() : undefined);
    const at = found.isOrgRecord ? organizationalDomain(domain) : domain;
    return { kind: 'record', at, record: found.rr, fromOrgDomain: found.isOrgRecord, p: text(found.p), sp: text(found.sp), adkim: text(found.adkim), aspf: text(found.aspf), pct: typeof found.pct === 'number' ? found.pct : undefined };
  } catch (err) {
    if (isNoRecord(err)) return { kind: 'none' };
    return { kind: 'error', error: lookupFailure(`_dmarc.${domain}`, 'TXT', err) };
  }
}
