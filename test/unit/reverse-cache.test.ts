import { describe, expect, it } from 'vitest';
import { ReverseLookupCache, type ReverseLookup } from '../../src/listener/reverse-cache.js';

type Answer = { err: NodeJS.ErrnoException | null; hostnames: string[] };

/** A lookup that answers only when the test says so, and counts what it was asked. */
function fakeLookup() {
  const asked: string[] = [];
  const waiting = new Map<string, ((err: NodeJS.ErrnoException | null, hostnames: string[]) => void)[]>();
  const lookup: ReverseLookup = (ip, cb) => {
    asked.push(ip);
    waiting.set(ip, [...(waiting.get(ip) ?? []), cb]);
  };
  const answer = (ip: string, a: Answer) => {
    const cbs = waiting.get(ip) ?? [];
    waiting.delete(ip);
    for (const cb of cbs) cb(a.err, a.hostnames);
  };
  return { lookup, asked, answer };
}

function notFound(ip: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`getHostByAddr ENOTFOUND ${ip}`), { code: 'ENOTFOUND' });
}

function ask(cache: ReverseLookupCache, ip: string): Promise<{ err: Error | null; hostnames: string[] | undefined }> {
  return new Promise((resolve) => cache.reverse(ip, (err, hostnames) => resolve({ err, hostnames })));
}

describe('ReverseLookupCache', () => {
  it('looks an address up once and answers later connections from the cache', async () => {
    const dns = fakeLookup();
    const cache = new ReverseLookupCache({ lookup: dns.lookup, now: () => 0 });
    const first = ask(cache, '192.0.2.10');
    dns.answer('192.0.2.10', { err: null, hostnames: ['crm.local', 'crm-alias.local'] });
    expect(await first).toEqual({ err: null, hostnames: ['crm.local', 'crm-alias.local'] });
    expect(await ask(cache, '192.0.2.10')).toEqual({ err: null, hostnames: ['crm.local', 'crm-alias.local'] });
    expect(dns.asked).toEqual(['192.0.2.10']);
  });

  it('gives each caller its own array (smtp-server shift()s it) and never answers synchronously', async () => {
    const dns = fakeLookup();
    const cache = new ReverseLookupCache({ lookup: dns.lookup, now: () => 0 });
    const first = ask(cache, '192.0.2.10');
    dns.answer('192.0.2.10', { err: null, hostnames: ['crm.local'] });
    (await first).hostnames?.shift();
    let answered = false;
    const second = new Promise<string[] | undefined>((resolve) =>
      cache.reverse('192.0.2.10', (_err, hostnames) => {
        answered = true;
        resolve(hostnames);
      }),
    );
    expect(answered).toBe(false);
    expect(await second).toEqual(['crm.local']);
  });

  it('looks up again once a name has expired (5 minutes by default)', async () => {
    let now = 1_000_000;
    const dns = fakeLookup();
    const cache = new ReverseLookupCache({ lookup: dns.lookup, now: () => now });
    const first = ask(cache, '192.0.2.10');
    dns.answer('192.0.2.10', { err: null, hostnames: ['old.local'] });
    await first;
    now += 5 * 60_000 - 1;
    expect((await ask(cache, '192.0.2.10')).hostnames).toEqual(['old.local']);
    expect(dns.asked).toHaveLength(1);
    now += 1;
    const again = ask(cache, '192.0.2.10');
    expect(dns.asked).toHaveLength(2);
    dns.answer('192.0.2.10', { err: null, hostnames: ['new.local'] });
    expect((await again).hostnames).toEqual(['new.local']);
  });

  it('caches a failure for a shorter time (1 minute by default), with the same error', async () => {
    let now = 0;
    const dns = fakeLookup();
    const cache = new ReverseLookupCache({ lookup: dns.lookup, now: () => now });
    const first = ask(cache, '198.51.100.7');
    const err = notFound('198.51.100.7');
    dns.answer('198.51.100.7', { err, hostnames: [] });
    expect((await first).err).toBe(err);
    now += 59_999;
    const cached = await ask(cache, '198.51.100.7');
    expect(cached.err).toBe(err);
    expect(cached.hostnames).toBeUndefined();
    expect(dns.asked).toHaveLength(1);
    now += 1;
    const again = ask(cache, '198.51.100.7');
    expect(dns.asked).toHaveLength(2);
    dns.answer('198.51.100.7', { err: null, hostnames: ['named-now.example'] });
    expect(await again).toEqual({ err: null, hostnames: ['named-now.example'] });
  });

  it('turns a lookup that throws (dns.reverse on a non-address) into an error answer', async () => {
    const cache = new ReverseLookupCache({
      lookup: () => {
        throw Object.assign(new Error('getHostByAddr EINVAL nope'), { code: 'EINVAL' });
      },
    });
    const { err } = await ask(cache, 'nope');
    expect((err as NodeJS.ErrnoException).code).toBe('EINVAL');
  });

  it('shares one lookup among concurrent connections from the same address', async () => {
    const dns = fakeLookup();
    const cache = new ReverseLookupCache({ lookup: dns.lookup, now: () => 0 });
    const answers = Promise.all([ask(cache, '192.0.2.10'), ask(cache, '192.0.2.10'), ask(cache, '192.0.2.10')]);
    const other = ask(cache, '192.0.2.11');
    expect(dns.asked).toEqual(['192.0.2.10', '192.0.2.11']);
    dns.answer('192.0.2.10', { err: null, hostnames: ['crm.local'] });
    dns.answer('192.0.2.11', { err: notFound('192.0.2.11'), hostnames: [] });
    const got = await answers;
    expect(got.map((a) => a.hostnames)).toEqual([['crm.local'], ['crm.local'], ['crm.local']]);
    expect(new Set(got.map((a) => a.hostnames)).size).toBe(3);
    expect((await other).err).toBeInstanceOf(Error);
    expect(dns.asked).toHaveLength(2);
  });

  it('ignores a second callback from the lookup', async () => {
    let cb: ((err: NodeJS.ErrnoException | null, hostnames: string[]) => void) | undefined;
    const cache = new ReverseLookupCache({ lookup: (_ip, c) => (cb = c), now: () => 0 });
    const first = ask(cache, '192.0.2.10');
    cb?.(null, ['one.local']);
    cb?.(null, ['two.local']);
    expect((await first).hostnames).toEqual(['one.local']);
    expect((await ask(cache, '192.0.2.10')).hostnames).toEqual(['one.local']);
  });

  it('keeps at most maxEntries addresses, evicting the one stored longest ago', async () => {
    const asked: string[] = [];
    const cache = new ReverseLookupCache({
      lookup: (ip, cb) => {
        asked.push(ip);
        cb(null, [`h-${ip}`]);
      },
      now: () => 0,
      maxEntries: 2,
    });
    await ask(cache, '10.0.0.1');
    await ask(cache, '10.0.0.2');
    await ask(cache, '10.0.0.3'); // evicts 10.0.0.1
    expect(cache.size).toBe(2);
    await ask(cache, '10.0.0.3');
    await ask(cache, '10.0.0.2');
    expect(asked).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    expect((await ask(cache, '10.0.0.1')).hostnames).toEqual(['h-10.0.0.1']); // looked up again, evicts 10.0.0.2
    expect(asked).toHaveLength(4);
    expect(cache.size).toBe(2);
    await ask(cache, '10.0.0.3');
    expect(asked).toHaveLength(4);
    await ask(cache, '10.0.0.2');
    expect(asked).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1', '10.0.0.2']);
  });

  it('uses dns.reverse by default', async () => {
    const cache = new ReverseLookupCache();
    // no network needed: an invalid address makes dns.reverse throw synchronously
    const { err } = await ask(cache, 'not-an-address');
    expect((err as NodeJS.ErrnoException).code).toBe('EINVAL');
  });
});
