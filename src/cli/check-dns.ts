import type { ConfigSnapshot } from '../config/types.js';
import { checkDeliverability } from '../deliverability/check.js';
import { dnsResolve } from '../deliverability/dns.js';
import { formatReport } from '../deliverability/format.js';

/** `sendas check --dns` exit codes beyond 0 (every domain passes): README "Commands". */
export const DNS_EXIT = { fail: 4, unknown: 5 } as const;

/**
 * `sendas check --dns [--dns-server IP[:PORT]] [--json]`: the From domains' SPF, DKIM and DMARC
 * as a receiver would see them. A report only: nothing is sent, nothing blocked.
 */
export async function checkDnsCommand(snapshot: ConfigSnapshot, opts: { servers: readonly string[]; json: boolean }, out: NodeJS.WritableStream, errOut: NodeJS.WritableStream): Promise<number> {
  const servers = opts.servers.length > 0 ? opts.servers : snapshot.deliverability.dnsServers;
  let resolve: ReturnType<typeof dnsResolve>;
  try {
    resolve = dnsResolve({ servers });
  } catch (err) {
    errOut.write(`sendas check --dns: --dns-server ${(err as Error).message.replace(/^Invalid IP address: /, '')} is not an IP address with an optional port (192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53)\n`);
    return 2;
  }
  const report = await checkDeliverability(snapshot, resolve);
  out.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
  return report.result === 'pass' ? 0 : DNS_EXIT[report.result];
}
