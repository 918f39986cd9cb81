import { reverse as dnsReverse } from 'node:dns';
import type { SMTPServerResolver } from 'smtp-server';

/** dns.reverse's shape: the names for an address, or an error (ENOTFOUND when it has no PTR record). */
export type ReverseLookup = (ip: string, callback: (err: NodeJS.ErrnoException | null, hostnames: string[]) => void) => void;

type Callback = (err: Error | null, hostnames?: string[]) => void;

export interface ReverseCacheOptions {
  /** The lookup behind the cache; dns.reverse unless a test injects one. */
  readonly lookup?: ReverseLookup;
  /** Milliseconds on some monotonic-enough clock; Date.now unless a test injects one. */
  readonly now?: () => number;
  /** How long a name is reused. */
  readonly ttlMs?: number;
  /** How long a failed lookup (no PTR record, DNS error or timeout) is reused. */
  readonly failureTtlMs?: number;
  /** Most addresses kept; past that, the entry stored longest ago goes. */
  readonly maxEntries?: number;
}

// Legacy software connects from a handful of addresses and opens one connection per message, so
// without a cache every message pays a PTR query. 5 minutes for a name: PTR records change rarely
// (their DNS TTLs are usually hours), and a renamed client shows its old name in Received headers
// for 5 minutes at most. 1 minute for a failure: a client that gets its PTR record (or a DNS server
// that comes back) is named soon, while a DNS outage costs one slow lookup per address a minute
// rather than smtp-server's 1.5 s reverse-lookup timeout on every connection. 10,000 addresses bound
// the memory (~3 MB measured) when many addresses connect, e.g. a scan.
const DEFAULTS = { ttlMs: 5 * 60_000, failureTtlMs: 60_000, maxEntries: 10_000 };

interface Entry {
  readonly err: Error | null;
  readonly hostnames: readonly string[];
  readonly expiresAt: number;
}

/**
 * smtp-server's `resolver`: dns.reverse with a bounded cache per address (names and failures)
 * and one lookup in flight per address, however many connections from it are waiting. Callers
 * get the same answers dns.reverse would give, always asynchronously, each in its own array
 * (smtp-server shift()s the one it gets).
 */
export class ReverseLookupCache implements SMTPServerResolver {
  private readonly entries = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Callback[]>();
  private readonly lookup: ReverseLookup;
  private readonly now: () => number;
  private readonly ttlMs: number;
  private readonly failureTtlMs: number;
  private readonly maxEntries: number;

  constructor(opts: ReverseCacheOptions = {}) {
    this.lookup = opts.lookup ?? dnsReverse;
    this.now = opts.now ?? Date.now;
    this.ttlMs = opts.ttlMs ?? DEFAULTS.ttlMs;
    this.failureTtlMs = opts.failureTtlMs ?? DEFAULTS.failureTtlMs;
    this.maxEntries = Math.max(1, opts.maxEntries ?? DEFAULTS.maxEntries);
  }

  /** Addresses cached (expired ones included until they are looked up again or evicted). */
  get size(): number {
    return this.entries.size;
  }

  reverse(ip: string, callback: Callback): void {
    const entry = this.entries.get(ip);
    if (entry) {
      if (entry.expiresAt > this.now()) {
        deliver(callback, entry);
        return;
      }
      this.entries.delete(ip);
    }
    const waiting = this.inFlight.get(ip);
    if (waiting) {
      waiting.push(callback);
      return;
    }
    this.inFlight.set(ip, [callback]);
    let settled = false;
    const settle = (err: Error | null, hostnames: readonly string[] | undefined): void => {
      if (settled) return;
      settled = true;
      const ttl = err ? this.failureTtlMs : this.ttlMs;
      const result: Entry = { err, hostnames: err ? [] : (hostnames ?? []), expiresAt: this.now() + ttl };
      this.store(ip, result);
      const callbacks = this.inFlight.get(ip) ?? [];
      this.inFlight.delete(ip);
      for (const cb of callbacks) deliver(cb, result);
    };
    try {
      this.lookup(ip, settle);
    } catch (err) {
      // dns.reverse throws (EINVAL) for what isn't an IP address; smtp-server would log it and go on without a name
      settle(err instanceof Error ? err : new Error(String(err)), undefined);
    }
  }

  private store(ip: string, entry: Entry): void {
    this.entries.delete(ip);
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(ip, entry);
  }
}

function deliver(callback: Callback, entry: Entry): void {
  // like dns.reverse: never synchronously, and a throwing callback can't keep the others waiting
  if (entry.err) process.nextTick(callback, entry.err);
  else process.nextTick(callback, null, [...entry.hostnames]);
}
