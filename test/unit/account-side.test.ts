import { describe, expect, it } from 'vitest';
import { AccountSide, type Side } from '../../src/transport/account-side.js';

describe('one side at a time holds an account’s connections (cluster:)', () => {
  it('a send for the other side waits for those in flight, has the side in use close its pool, and sends queued behind it follow', async () => {
    const side = new AccountSide();
    const closed: Side[] = [];
    const close = async (s: Side) => void closed.push(s);
    const order: string[] = [];
    await side.enter('thread', close);
    await side.enter('thread', close);
    const large = side.enter('main', close).then(() => order.push('main'));
    const small = side.enter('thread', close).then(() => order.push('thread'));
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([]); // two sends still in flight on the thread
    side.exit();
    await new Promise((r) => setImmediate(r));
    expect(closed).toEqual([]);
    side.exit();
    await large;
    expect(closed).toEqual(['thread']);
    side.exit(); // the large one is done: the small one queued behind it takes the thread back
    await small;
    expect(closed).toEqual(['thread', 'main']);
    expect(order).toEqual(['main', 'thread']);
  });

  it('a small message goes with the main thread while it holds the connections and is busy, back to the thread once it is idle', async () => {
    const side = new AccountSide();
    const close = async () => undefined;
    expect(side.choose('thread')).toBe('thread');
    await side.enter('main', close);
    expect(side.choose('thread')).toBe('main');
    expect(side.choose('main')).toBe('main');
    side.exit();
    expect(side.choose('thread')).toBe('thread');
  });
});
