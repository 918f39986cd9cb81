import { Resolver } from 'node:dns/promises';

/**
 * The lookup layer: one function with the shape of `dns.promises.Resolver.resolve`, which is
 * also what mailauth's SPF check and DMARC lookup take as `resolver`. Answers: string[] for
 * A/AAAA/CNAME, string[][] (the character strings of each record) for TXT. A name or type that
 * doesn't exist rejects with code ENOTFOUND or ENODATA, as Node's resolver does.
 */
export type Resolve = (name: string, rrtype: string) => Promise<unknown>;

export interface DnsOptions {
  /** IP[:PORT] ("192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53"); empty: the system's resolvers. */
  readonly servers?: readonly string[];
  /** Per query attempt. */
  readonly timeoutMs?: number;
}

/** Node's resolver (c-ares: UDP, TCP when an answer is truncated, as long TXT keys are); `cancel` ends its queries in flight (ECANCELLED). */
export function dnsResolve(opts: DnsOptions = {}): Resolve & { cancel(): void } {
  const resolver = new Resolver({ timeout: opts.timeoutMs ?? 3000, tries: 2 });
  if (opts.servers && opts.servers.length > 0) resolver.setServers([...opts.servers]);
  return Object.assign((name: string, rrtype: string) => resolver.resolve(name, rrtype), { cancel: () => resolver.cancel() });
}

/** One question asked once per check: SPF include chains and several rows share names. */
export function memoResolve(resolve: Resolve): Resolve {
  const answers = new Map<string, Promise<unknown>>();
  return (name, rrtype) => {
    const key = `${rrtype} ${name.toLowerCase()}`;
    let answer = answers.get(key);
    if (!answer) answers.set(key, (answer = resolve(name, rrtype)));
    return answer;
  };
}

/** The name or the record type does not exist: an answer, not a failure to look up. */
export function isNoRecord(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  return code === 'ENOTFOUND' || code === 'ENODATA';
}

/** A failed lookup in words ("could not look up TXT _dmarc.acme.example: ETIMEOUT"). */
export function lookupFailure(name: string, rrtype: string, err: unknown): string {
  const e = err as { code?: string; message?: string };
  return `could not look up ${rrtype} ${name}: ${e.code ?? e.message ?? String(err)}`;
}

/** TXT records as strings: a record's character strings are joined without spaces (RFC 7208 §3.3). */
export async function txtRecords(resolve: Resolve, name: string): Promise<string[]> {
  try {
    const rows = (await resolve(name, 'TXT')) as string[][];
    return rows.map((r) => r.join(''));
  } catch (err) {
    if (isNoRecord(err)) return [];
    throw err;
  }
}

/** A and AAAA of a host; an IP literal is its own address. */
export async function hostAddresses(resolve: Resolve, host: string): Promise<string[]> {
  const bare = host.replace(/^\[|\]$/g, '');
  if (/^\d+\.\d+\.\d+\.\d+$/.test(bare) || bare.includes(':')) return [bare];
  // the resolver asks DNS only, and localhost is in no zone (RFC 6761 §6.3)
  if (bare.toLowerCase() === 'localhost') return ['127.0.0.1', '::1'];
  const out: string[] = [];
  for (const rrtype of ['A', 'AAAA']) {
    try {
      out.push(...((await resolve(bare, rrtype)) as string[]));
    } catch (err) {
      if (!isNoRecord(err)) throw err;
    }
  }
  return out;
}
