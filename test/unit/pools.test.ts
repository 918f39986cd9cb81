import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ConfigSnapshot } from '../../src/config/types.js';
import { accountFor, type Account } from '../../src/config/account.js';
import { DEFAULT_TUNING } from '../../src/transport/options.js';
import { TransportPools } from '../../src/transport/pools.js';
import { BASE_YAML, snapshotOf } from './helpers.js';

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
