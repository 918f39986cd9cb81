import type { DeliverabilityReport } from './check.js';
import type { DomainVerdict } from './verdict.js';

const MARK: Record<DomainVerdict['result'], string> = { pass: 'PASS', fail: 'FAIL', unknown: 'UNKNOWN' };

/** `sendas check --dns` as text: one block per domain and server, the records to add under it. */
export function formatReport(report: DeliverabilityReport): string {
  if (report.domains.length === 0) return 'no From domain to check: the config has no channel, agent or server account with an address';
  const blocks = report.domains.map(formatDomain);
  const counts = (['fail', 'unknown', 'pass'] as const).map((r) => [r, report.domains.filter((d) => d.result === r).length] as const).filter(([, n]) => n > 0);
  const summary = counts.map(([r, n]) => `${n} ${r === 'pass' ? 'pass' : r === 'fail' ? 'would fail DMARC' : 'could not be checked'}`).join(', ');
  return `${blocks.join('\n\n')}\n\n${summary}`;
}

function formatDomain(d: DomainVerdict): string {
  const lines = [`${MARK[d.result]}  ${d.domain} via server ${d.server}  (From ${d.addresses.join(', ')}; ${d.senders.join(', ')})`];
  lines.push(`  SPF    ${d.spf.result}${d.spf.aligned ? ', aligned' : ''}: ${d.spf.detail}`);
  lines.push(`  DKIM   ${d.dkim.result}${d.dkim.aligned ? ', aligned' : ''}: ${d.dkim.detail}`);
  lines.push(`  DMARC  ${d.dmarc.record ? `${d.dmarc.detail}: ${d.dmarc.at} "${d.dmarc.record}"` : d.dmarc.detail}`);
  // the SPF and DKIM lines above already say what is wrong with each
  for (const p of d.problems.filter((p) => !/^(SPF|DKIM): /.test(p))) lines.push(`  ${d.result === 'pass' ? 'problem' : 'why'}: ${p}`);
  for (const n of d.notes) lines.push(`  note: ${n}`);
  if (d.fixes.length > 0) {
    lines.push('  add to DNS:');
    for (const f of d.fixes) lines.push(`    ${f.record}\n      (${f.why})`);
  }
  return lines.join('\n');
}
