import { isAligned, organizationalDomain, type AlignmentMode } from './alignment.js';
import type { DkimSelectorFacts, DmarcFacts, DomainFacts, SpfFacts } from './facts.js';

/** What a receiver's DMARC check would make of this domain's mail through this server. Pure data. */
export interface DomainVerdict {
  readonly domain: string;
  readonly server: string;
  readonly addresses: readonly string[];
  readonly senders: readonly string[];
  /** pass: SPF or DKIM passes aligned with From; unknown: a lookup failed and nothing passed. */
  readonly result: 'pass' | 'fail' | 'unknown';
  readonly spf: { readonly result: string; readonly aligned: boolean; readonly detail: string };
  readonly dkim: { readonly result: 'pass' | 'missing' | 'mismatch' | 'revoked' | 'not-known' | 'unknown'; readonly aligned: boolean; readonly detail: string };
  readonly dmarc: { readonly policy: 'none' | 'quarantine' | 'reject' | undefined; readonly record?: string; readonly at?: string; readonly aspf: AlignmentMode; readonly adkim: AlignmentMode; readonly detail: string };
  /** Why it fails (or what is broken), one sentence each. */
  readonly problems: readonly string[];
  /** DNS records to add or replace, in zone-file form, each with why. */
  readonly fixes: readonly { readonly record: string; readonly why: string }[];
  readonly notes: readonly string[];
}

type Policy = 'none' | 'quarantine' | 'reject';

export function judgeDomain(f: DomainFacts): DomainVerdict {
  const problems: string[] = [];
  const fixes: { record: string; why: string }[] = [];
  const notes: string[] = [];

  const dmarc = dmarcView(f.dmarc, f.domain);
  const spf = judgeSpf(f.domain, f.spf, dmarc.aspf);
  const dkim = judgeDkim(f.domain, f.dkim.selectors, dmarc.adkim, f.server);
  const passes = spf.aligned || dkim.aligned;
  const unknown = !passes && (spf.result === 'unknown' || dkim.result === 'unknown' || f.dmarc.kind === 'error');
  const result = passes ? 'pass' : unknown ? 'unknown' : 'fail';

  if (!spf.aligned) {
    problems.push(`SPF: ${spf.detail}`);
    if (spf.fix) fixes.push(spf.fix);
  }
  if (!dkim.aligned) {
    if (dkim.result !== 'not-known' || !passes) problems.push(`DKIM: ${dkim.detail}`);
    fixes.push(...dkim.fixes);
  }
  if (dkim.result === 'mismatch' && dkim.aligned) problems.push(`DKIM: ${dkim.detail}`);
  if (result === 'fail') problems.push(`DMARC: ${consequence(dmarc.policy, f.dmarc, f.domain)}`);
  if (f.dmarc.kind === 'error') problems.push(`DMARC: ${f.dmarc.error}`);
  if (f.dmarc.kind === 'none') {
    fixes.push({ record: txt(`_dmarc.${organizationalDomain(f.domain)}`, `v=DMARC1; p=none; rua=mailto:dmarc-reports@${organizationalDomain(f.domain)}`), why: `${f.domain} has no DMARC policy: Gmail and Yahoo require one from bulk senders; start with p=none and read the reports before quarantine or reject` });
  }
  if (passes && !dkim.aligned) notes.push('only SPF authenticates this mail: a forwarded copy fails DMARC (SPF does not survive forwarding); aligned DKIM would carry it');
  if (passes && !spf.aligned) notes.push('only DKIM authenticates this mail: fine for DMARC, but some receivers also weigh SPF');
  notes.push(...dkim.notes);
  if (f.dmarc.kind === 'record' && f.dmarc.pct !== undefined && f.dmarc.pct < 100 && result === 'fail') {
    notes.push(`pct=${f.dmarc.pct}: the policy applies to ${f.dmarc.pct}% of failing mail; the rest is treated one step milder`);
  }

  return {
    domain: f.domain,
    server: f.server,
    addresses: f.addresses,
    senders: f.senders,
    result,
    spf: { result: spf.result, aligned: spf.aligned, detail: spf.detail },
    dkim: { result: dkim.result, aligned: dkim.aligned, detail: dkim.detail },
    dmarc: { policy: dmarc.policy, ...(f.dmarc.kind === 'record' ? { record: f.dmarc.record, at: `_dmarc.${f.dmarc.at}` } : {}), aspf: dmarc.aspf, adkim: dmarc.adkim, detail: dmarc.detail },
    problems,
    fixes: dedupe(fixes),
    notes,
  };
}

/** The policy a receiver applies to this From domain: sp= when the record is the organizational domain's (RFC 7489 §6.6.3). */
function dmarcView(d: DmarcFacts, domain: string): { policy: Policy | undefined; aspf: AlignmentMode; adkim: AlignmentMode; detail: string } {
  if (d.kind !== 'record') {
    return { policy: undefined, aspf: 'relaxed', adkim: 'relaxed', detail: d.kind === 'none' ? `no DMARC record at _dmarc.${domain}${organizationalDomain(domain) !== domain ? ` or _dmarc.${organizationalDomain(domain)}` : ''}` : d.error };
  }
  const raw = (d.fromOrgDomain && d.sp ? d.sp : d.p)?.toLowerCase();
  // an unknown p= with a valid record is treated as none (RFC 7489 §6.6.3 step 6)
  const policy: Policy = raw === 'reject' || raw === 'quarantine' ? raw : 'none';
  const aspf: AlignmentMode = d.aspf?.toLowerCase() === 's' ? 'strict' : 'relaxed';
  const adkim: AlignmentMode = d.adkim?.toLowerCase() === 's' ? 'strict' : 'relaxed';
  const which = d.fromOrgDomain ? `${d.sp ? 'sp' : 'p'}=${policy} of the organizational domain ${d.at}` : `p=${policy}`;
  return { policy, aspf, adkim, detail: `${which} (SPF alignment ${aspf}, DKIM alignment ${adkim})` };
}

function consequence(policy: Policy | undefined, d: DmarcFacts, domain: string): string {
  const where = d.kind === 'record' ? `_dmarc.${d.at}` : '';
  switch (policy) {
    case 'reject':
      return `${where} says p=reject and neither SPF nor DKIM passes aligned with ${domain}: receivers refuse the mail (typically 550 5.7.1)`;
    case 'quarantine':
      return `${where} says quarantine and neither SPF nor DKIM passes aligned with ${domain}: receivers put the mail in spam`;
    case 'none':
      return `neither SPF nor DKIM passes aligned with ${domain}: the mail fails DMARC; p=none lets receivers deliver it, but Gmail and Yahoo junk or refuse unauthenticated bulk mail`;
    default:
      return `neither SPF nor DKIM passes for ${domain} and there is no DMARC policy: receivers decide alone, and Gmail and Yahoo refuse unauthenticated mail`;
  }
}

function judgeSpf(fromDomain: string, s: SpfFacts, mode: AlignmentMode): { result: string; aligned: boolean; detail: string; fix?: { record: string; why: string } } {
  if (s.error) return { result: 'unknown', aligned: false, detail: s.error };
  const failing = s.results.filter((r) => r.result !== 'pass');
  const temp = failing.find((r) => r.result === 'temperror');
  if (temp) return { result: 'unknown', aligned: false, detail: `could not evaluate the SPF policy of ${s.domain} for ${temp.ip}: ${temp.comment ?? 'temperror'}` };
  const aligned = isAligned(fromDomain, s.domain, mode);
  if (failing.length === 0 && s.results.length > 0) {
    if (aligned) return { result: 'pass', aligned: true, detail: `${s.domain} authorizes ${s.origin}` };
    return { result: 'pass', aligned: false, detail: `passes for the envelope domain ${s.domain}, which is not ${mode === 'strict' ? 'the same as' : 'in the organizational domain of'} ${fromDomain} (aspf ${mode})` };
  }
  const worst = failing[0]!;
  const fix = spfFix(s);
  if (s.records.length === 0) return { result: 'none', aligned: false, detail: `${s.domain} publishes no SPF record, so nothing authorizes ${s.origin}`, fix };
  if (worst.result === 'permerror') return { result: 'permerror', aligned: false, detail: `the SPF policy of ${s.domain} is broken (${worst.comment ?? 'permerror'}); receivers treat it as no authorization`, ...(s.records.length === 1 ? { fix } : {}) };
  const how = { fail: '-all refuses it', softfail: '~all only soft-fails it, which DMARC does not count as a pass', neutral: '?all leaves it neutral, which DMARC does not count as a pass', none: 'no policy applies' }[worst.result as 'fail' | 'softfail' | 'neutral' | 'none'];
  return { result: worst.result, aligned: false, detail: `the SPF policy of ${s.domain} does not cover ${worst.ip} (${s.origin}): ${how}`, fix };
}

/** The SPF record with the missing mechanisms in front of the existing ones (or a new one). */
function spfFix(s: SpfFacts): { record: string; why: string } | undefined {
  if (s.authorize.length === 0) return undefined;
  const current = s.records[0];
  const whom = s.authorizeFor ?? s.origin;
  if (!current) return { record: txt(s.domain, `v=spf1 ${s.authorize.join(' ')} -all`), why: `authorizes ${whom}` };
  const terms = current.trim().split(/\s+/);
  const missing = s.authorize.filter((m) => !terms.some((t) => t.toLowerCase() === m.toLowerCase()));
  const next = [terms[0]!, ...missing, ...terms.slice(1)].join(' ');
  return { record: txt(s.domain, next), why: `replaces "${current}": adds ${missing.join(' ') || 'nothing (check the mechanisms before them)'} for ${whom}` };
}

interface DkimJudgement {
  result: DomainVerdict['dkim']['result'];
  aligned: boolean;
  detail: string;
  fixes: { record: string; why: string }[];
  notes: string[];
}

function judgeDkim(fromDomain: string, selectors: readonly DkimSelectorFacts[], mode: AlignmentMode, server: string): DkimJudgement {
  const fixes: { record: string; why: string }[] = [];
  const notes: string[] = [];
  if (selectors.length === 0) {
    return { result: 'not-known', aligned: false, detail: `sendas does not sign ${fromDomain} (no \`dkim:\` entry for it) and whether server ${server} signs is not known, so DKIM is not counted`, fixes, notes };
  }
  const ours = selectors.filter((s) => s.signer === 'sendas');
  const judged = (ours.length > 0 ? ours : selectors).map((s) => ({ s, state: keyState(s) }));
  const good = judged.find((j) => j.state === 'pass');
  const errors = judged.filter((j) => j.state === 'unknown');

  for (const { s, state } of judged) {
    if (state === 'pass' || state === 'unknown') continue;
    fixes.push(...dkimFix(s, state));
  }
  if (good) {
    const aligned = isAligned(fromDomain, good.s.signingDomain, mode);
    const missingOther = judged.filter((j) => j !== good && j.state === 'missing' && j.s.signer === 'microsoft365');
    for (const m of missingOther) notes.push(`${name(m.s)} is not published: Microsoft 365 rotates to it, and signing stops aligning when it does`);
    const mismatch = judged.find((j) => j.state === 'mismatch');
    const detail = aligned
      ? `${name(good.s)} publishes the key ${who(good.s)} signs with (d=${good.s.signingDomain})`
      : `signed with d=${good.s.signingDomain}, which is not ${mode === 'strict' ? 'the same as' : 'in the organizational domain of'} ${fromDomain} (adkim ${mode})`;
    if (mismatch) return { result: 'mismatch', aligned, detail: `${describe(mismatch.s, 'mismatch')}; ${detail}`, fixes, notes };
    return { result: 'pass', aligned, detail, fixes, notes };
  }
  if (errors.length > 0) return { result: 'unknown', aligned: false, detail: errors.map((j) => (j.s.published as { error: string }).error).join('; '), fixes, notes };
  const first = judged.find((j) => j.state === 'mismatch') ?? judged.find((j) => j.state === 'revoked') ?? judged[0]!;
  return { result: first.state as 'missing' | 'mismatch' | 'revoked', aligned: false, detail: judged.map((j) => describe(j.s, j.state)).join('; '), fixes, notes };
}

type KeyState = 'pass' | 'missing' | 'mismatch' | 'revoked' | 'unknown';

function keyState(s: DkimSelectorFacts): KeyState {
  switch (s.published.kind) {
    case 'error':
      return 'unknown';
    case 'none':
      return 'missing';
    case 'revoked':
      return 'revoked';
    case 'key':
      if (s.configuredKey !== undefined && normalizeKey(s.published.key) !== normalizeKey(s.configuredKey)) return 'mismatch';
      return 'pass';
  }
}

function describe(s: DkimSelectorFacts, state: KeyState): string {
  switch (state) {
    case 'missing':
      return s.cname && s.published.kind === 'none'
        ? `${name(s)} points to ${s.cname}, which publishes no key yet (turn DKIM signing on for the domain in Microsoft 365 Defender)`
        : `no DKIM key published at ${name(s)}`;
    case 'revoked':
      return `the key at ${name(s)} is revoked (empty p=)`;
    case 'mismatch':
      return `the key published at ${name(s)} differs from the configured key of \`dkim:\` for ${s.signingDomain}: receivers can't verify sendas's signature`;
    default:
      return `${name(s)}: ${s.published.kind === 'error' ? s.published.error : state}`;
  }
}

function dkimFix(s: DkimSelectorFacts, state: KeyState): { record: string; why: string }[] {
  const at = `${s.selector}._domainkey.${s.signingDomain}`;
  if (s.signer === 'sendas' && s.configuredKey) {
    return [{ record: txt(at, `v=DKIM1; k=${s.configuredKeyType ?? 'rsa'}; p=${normalizeKey(s.configuredKey)}`), why: state === 'mismatch' ? 'replaces the published key with the one sendas signs with' : 'publishes the key sendas signs with' }];
  }
  if (s.signer === 'microsoft365' && state === 'missing' && !s.cname) {
    const target = s.cnameTarget ?? `${s.selector}-${s.signingDomain.replace(/\./g, '-')}._domainkey.<tenant>.onmicrosoft.com`;
    return [{ record: `${at}. CNAME ${target}.`, why: 'Microsoft 365 signs with this selector once the CNAME exists and DKIM is turned on for the domain (Defender portal › Email authentication › DKIM shows the exact target)' }];
  }
  if (s.signer === 'google' && state !== 'pass') {
    return [{ record: txt(at, 'v=DKIM1; k=rsa; p=<the key Google Admin shows>'), why: 'generate it in Google Admin (Apps › Google Workspace › Gmail › Authenticate email), publish it, then press "Start authentication"' }];
  }
  return [];
}

function name(s: DkimSelectorFacts): string {
  return `${s.selector}._domainkey.${s.signingDomain}`;
}

function who(s: DkimSelectorFacts): string {
  return s.signer === 'sendas' ? 'sendas' : s.signer === 'microsoft365' ? 'Microsoft 365' : 'Google';
}

/** A key as base64 alone: no PEM armour, no white space (DNS tools split p= anywhere). */
export function normalizeKey(key: string): string {
  return key.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
}

/** A TXT record in zone-file form; text over 255 bytes is split into several strings (RFC 1035 §3.3.14). */
export function txt(name: string, text: string): string {
  const parts: string[] = [];
  for (let i = 0; i < text.length; i += 255) parts.push(`"${text.slice(i, i + 255)}"`);
  return `${name}. TXT ${parts.join(' ')}`;
}

function dedupe<T extends { record: string }>(list: T[]): T[] {
  return list.filter((x, i) => list.findIndex((y) => y.record === x.record) === i);
}
