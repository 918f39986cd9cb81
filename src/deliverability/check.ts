import type { ConfigSnapshot } from '../config/types.js';
import { memoResolve, type Resolve } from './dns.js';
import type { DomainFacts } from './facts.js';
import { lookupDomain } from './lookup.js';
import { sendingDomains } from './targets.js';
import { judgeDomain, type DomainVerdict } from './verdict.js';

/** The whole check: every From domain by server, and the worst of them. */
export interface DeliverabilityReport {
  readonly checkedAt: string;
  /** fail: some domain would fail DMARC; unknown: none fails, but some could not be looked up. */
  readonly result: 'pass' | 'fail' | 'unknown';
  readonly domains: readonly DomainVerdict[];
}

/** Looks up and judges every From domain the snapshot can send as. Nothing here sends or blocks mail. */
export async function checkDeliverability(snapshot: ConfigSnapshot, resolve: Resolve, now: () => Date = () => new Date()): Promise<DeliverabilityReport> {
  const shared = memoResolve(resolve);
  const facts = await Promise.all(sendingDomains(snapshot).map((row) => lookupDomain(snapshot, row, shared)));
  const domains = withOneSpfRecord(facts).map(judgeDomain);
  return { checkedAt: now().toISOString(), result: worst(domains.map((d) => d.result)), domains };
}

/**
 * A domain has one SPF record however many servers send as it: the fix of each row names what
 * all of the domain's servers that SPF doesn't cover yet need, so applying one fix doesn't undo another.
 */
function withOneSpfRecord(facts: readonly DomainFacts[]): DomainFacts[] {
  const needed = new Map<string, string[]>();
  for (const f of facts) {
    if (f.spf.results.length > 0 && f.spf.results.every((r) => r.result === 'pass')) continue;
    const list = needed.get(f.domain) ?? [];
    for (const m of f.spf.authorize) if (!list.includes(m)) list.push(m);
    needed.set(f.domain, list);
  }
  return facts.map((f) => {
    const all = needed.get(f.domain);
    return all && all.length > f.spf.authorize.length ? { ...f, spf: { ...f.spf, authorize: all, authorizeFor: `the servers that send as ${f.domain}` } } : f;
  });
}

export function worst(results: readonly DomainVerdict['result'][]): DeliverabilityReport['result'] {
  if (results.includes('fail')) return 'fail';
  if (results.includes('unknown')) return 'unknown';
  return 'pass';
}
