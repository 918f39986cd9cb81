import type { ConfigSnapshot } from '../config/types.js';
import { memoResolve, type Resolve } from './dns.js';
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
  const domains = await Promise.all(sendingDomains(snapshot).map(async (row) => judgeDomain(await lookupDomain(snapshot, row, shared))));
  return { checkedAt: now().toISOString(), result: worst(domains.map((d) => d.result)), domains };
}

export function worst(results: readonly DomainVerdict['result'][]): DeliverabilityReport['result'] {
  if (results.includes('fail')) return 'fail';
  if (results.includes('unknown')) return 'unknown';
  return 'pass';
}
