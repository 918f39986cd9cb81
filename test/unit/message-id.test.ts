import { describe, expect, it } from 'vitest';
import { newMessageId } from '../../src/mail/message-id.js';

describe('newMessageId', () => {
  it('is 12 characters of the 32-letter alphabet without look-alikes, and 100,000 of them are distinct', () => {
    const ids = new Set<string>();
    const malformed: string[] = [];
    const counts = new Map<string, number>();
    for (let i = 0; i < 100_000; i++) {
      const id = newMessageId();
      if (!/^[A-HJ-NP-Z2-9]{12}$/.test(id)) malformed.push(id);
      ids.add(id);
      for (const c of id) counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    expect(malformed).toEqual([]);
    // across many refills of the random pool (341 ids each), not one id repeats
    expect(ids.size).toBe(100_000);
    // 1,200,000 letters: each of the 32 comes up about 37,500 times (±~1,000 at 5 standard deviations)
    expect(counts.size).toBe(32);
    for (const n of counts.values()) expect(Math.abs(n - 37_500)).toBeLessThan(1_000);
  });
});
