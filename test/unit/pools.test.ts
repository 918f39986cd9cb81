import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ConfigSnapshot } from '../../src/config/types.js';
import { accountFor, type Account } from '../../src/config/account.js';
import { DEFAULT_TUNING } from '../../src/transport/options.js';
import { TransportPools } from '../../src/transport/pools.js';
import { BASE_YAML, snapshotOf } from './helpers.js';
import { startTestUpstream } from '../support/upstream.js';
import { Readable } from 'node:stream';

/** The pool fingerprint is cached per Account object: a reload must still bring a new pool for a changed account. */
describe('connection pools per account', () => {
  const pools = new TransportPools({ ...DEFAULT_TUNING, helo: 'relay.test' });
  afterEach(() => pools.closeAll());

  const account = (snapshot: ConfigSnapshot, name?: string): Account => {
    const a = accountFor(snapshot, name === undefined ? undefined : snapshot.identitiesByName.get(name));
    if (!('key' in a)) throw a;
    return a;
  };

  it('computes an account’s pool fingerprint once per snapshot, not per message', () => {
    const s = snapshotOf();
    const a = account(s, 'alice');
    const identify = vi.spyOn(pools, 'identify');
    pools.get(a);
    pools.get(account(s, 'alice')); // accountFor builds a new Account object for every message
    pools.get(account(s));
    pools.get(account(s, 'sales')); // no override: the default server's own account
    expect(identify).toHaveBeenCalledTimes(2);
    pools.get(account(snapshotOf(), 'alice')); // a reload: new config objects, computed afresh
    expect(identify).toHaveBeenCalledTimes(3);
    identify.mockRestore();
    expect(pools.size).toBe(2);
  });

  it('after a failover the primary gets new pools (the old ones close once idle); the alternate keeps its own', () => {
    const pools = new TransportPools({ ...DEFAULT_TUNING, helo: 'relay.test' });
    const s = snapshotOf();
    const a = account(s, 'alice');
    const alternate = { host: 'smtp2.acme.example', port: 587 };
    const before = pools.get(a);
    const onAlternate = pools.get(a, alternate);
    const closed = vi.spyOn(before, 'close');
    expect(pools.primaryFailed(a.server.name)).toEqual([a.key]);
    // nothing was pending on it: closed at once, and the next message opens a new pool
    expect(closed).toHaveBeenCalledTimes(1);
    const after = pools.get(account(s, 'alice'));
    expect(after).not.toBe(before);
    expect(pools.get(a, alternate)).toBe(onAlternate);
    // the next failover retires the new generation, not the alternate
    expect(pools.primaryFailed(a.server.name)).toEqual([`${a.key}#1`]);
    expect(pools.get(a)).not.toBe(after);
    expect(pools.primaryFailed('no such server')).toEqual([]);
    pools.closeAll();
  });

  it('keeps the pool of an unchanged account across a reload', () => {
    const s = snapshotOf();
    const first = pools.get(account(s, 'alice'));
    expect(pools.get(account(s, 'alice'))).toBe(first);
    expect(pools.get(account(snapshotOf(), 'alice'))).toBe(first);
    expect(pools.size).toBe(1);
  });

  it('retires the pool when the account’s password changes, on the hot path and on reload', () => {
    const s = snapshotOf();
    const old = pools.get(account(s, 'alice'));
    const close = vi.spyOn(old, 'close');
    const rotated = snapshotOf(BASE_YAML.replace('password: alice-pw', 'password: alice-pw-2'));
    const [key, fingerprint] = pools.identify(account(rotated, 'alice'));
    expect(key).toBe(pools.identify(account(s, 'alice'))[0]);
    expect(fingerprint).not.toBe(pools.identify(account(s, 'alice'))[1]);
    const fresh = pools.get(account(rotated, 'alice'));
    expect(fresh).not.toBe(old);
    expect(close).toHaveBeenCalledTimes(1);
    // what relay.apply() does: the pool built with the old password is not wanted any more
    expect(pools.retain(new Map([[key, pools.identify(account(s, 'alice'))[1]]]))).toEqual([key]);
  });

  it('retires the pool when the server’s settings change (the server account too)', () => {
    const s = snapshotOf();
    const old = pools.get(account(s));
    const moved = snapshotOf(BASE_YAML.replace('host: smtp.acme.example', 'host: smtp-new.acme.example'));
    expect(pools.get(account(moved))).not.toBe(old);
    expect(pools.get(account(moved, 'alice'))).not.toBe(pools.get(account(s, 'alice')));
  });

  it('keeps a separate pool, and fingerprint, per route', () => {
    const a = account(snapshotOf(), 'alice');
    const primary = pools.get(a);
    const alt = pools.get(a, { host: 'smtp3.acme.example', port: 587 });
    expect(alt).not.toBe(primary);
    expect(pools.get(a, { host: 'smtp3.acme.example', port: 587 })).toBe(alt);
    expect(pools.identify(a, { host: 'smtp3.acme.example', port: 587 })[0]).toBe(`${a.key}@smtp3.acme.example:587`);
    expect(pools.identify(a, { host: 'smtp3.acme.example', port: 2525 })[1]).not.toBe(pools.identify(a, { host: 'smtp3.acme.example', port: 587 })[1]);
    expect(pools.size).toBe(2);
  });
});

describe('a primary pool retired by a failover', () => {
  it('lets the message it still has go on (close() at once would fail it), then closes', async () => {
    const upstream = await startTestUpstream({ accounts: [{ username: 'relay@acme.example', password: 'server-pw' }] });
    const pools = new TransportPools({ ...DEFAULT_TUNING, helo: 'relay.test' });
    try {
      const s = snapshotOf(`
servers:
  - name: main
    default: true
    host: 127.0.0.1
    port: ${upstream.port}
    security: none
    username: relay@acme.example
    password: server-pw
`);
      const a = accountFor(s, undefined) as Account;
      const pool = pools.get(a);
      const closed = vi.spyOn(pool, 'close');
      const message = Readable.from([Buffer.from('From: <relay@acme.example>\r\nSubject: in flight\r\n\r\nbody\r\n')], { objectMode: false });
      // queued on the pool, waiting for its first connection, when the failover retires the pool
      const sending = pools.send(a, undefined, { from: 'relay@acme.example', to: ['customer@example.net'], eightBit: false }, message);
      pools.primaryFailed('main');
      expect(closed).not.toHaveBeenCalled();
      const info = await sending;
      expect(info.accepted).toEqual(['customer@example.net']);
      expect(closed).toHaveBeenCalledTimes(1);
      expect((await upstream.nextMessage()).raw.toString()).toContain('Subject: in flight');
    } finally {
      pools.closeAll();
      await upstream.close();
    }
  });
});
